"""The HTTP plugin's Flask app: status endpoint and JSON errors for every HTTP failure; its
listener's request timeouts leave a long response alone."""
import time

from convergence.plugins.http.app import create_app

from api_client import EventStream, call


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


def test_request_timeouts_do_not_end_an_event_stream(convergence_server):
    """``header_timeout``/``body_timeout`` bound reading a request (tests/core/test_listeners.py),
    not the response: an event stream outlives both several times over and still delivers."""
    server = convergence_server({"alice": "pw-a", "bob": "pw-b"},
                                http={"header_timeout": 0.3, "body_timeout": 0.3, "sse_keepalive": 0.2})
    stream = EventStream(server, "alice")
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        stream.next("comment", timeout=1)  # keep-alives keep coming
    sent = call(server, "POST", "/api/messages", {"to": "alice@example.org", "body": "still there"},
                user="bob")
    assert (sent.status, sent.json["outcome"]) == (200, "delivered")
    assert stream.next("message")["body"] == "still there"
    stream.close()
