"""The HTTP plugin's Flask app: status endpoint and JSON errors for every HTTP failure."""
from convergence.plugins.http.app import create_app


def test_status(core):
    response = create_app(core).test_client().get("/api/status")
    assert response.status_code == 200
    assert response.json["domain"] == "localhost"


def test_errors_are_json(core):
    client = create_app(core).test_client()
    missing = client.get("/nope")
    assert (missing.status_code, missing.json["status"]) == (404, 404)
    assert missing.json["message"]
    wrong_method = client.post("/api/status")
    assert (wrong_method.status_code, wrong_method.json["status"]) == (405, 405)
