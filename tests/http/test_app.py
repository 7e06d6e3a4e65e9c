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


def test_a_failing_view_is_a_logged_json_500(make_core, caplog):
    from flask import Blueprint

    from convergence import hookimpl
    bp = Blueprint("broken", __name__)

    @bp.get("/broken")
    def broken():
        raise RuntimeError("boom")

    class Plugin:
        @hookimpl
        def add_blueprints(self):
            return [bp]
    response = create_app(make_core(plugins={"broken": Plugin()})).test_client().get("/broken")
    assert (response.status_code, response.json["status"]) == (500, 500)
    assert "boom" in caplog.text


def test_a_405_names_the_allowed_methods(core):
    """RFC 9110 §15.5.6: a 405 response MUST carry Allow; TRACE is not served (no route allows it)."""
    client = create_app(core).test_client()
    for method in ("TRACE", "POST", "DELETE"):
        response = client.open("/api/status", method=method)
        assert response.status_code == 405, method
        assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}, method
        assert response.json["status"] == 405
