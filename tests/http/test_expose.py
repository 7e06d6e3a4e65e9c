"""ExposeURL (research/seed.md §1.3): the HTTP user greets every online account and shows online;
messages to the HTTP user are echoed while no callback URL is set (§1.2 case 2)."""
import urllib.request

import pytest

from convergence import RoutingError, hookimpl
from convergence.plugins.http.app import create_app
from convergence.plugins.http.expose import page
from convergence.testing import RecordingEndpoint

PEOPLE = {"alice": "wonderland", "bob": "builder"}
HTTP_USER = "httpuser@example.org"


def expose(server, method="GET"):
    """(status, content type, page) of one ExposeURL request."""
    request = urllib.request.Request(server.http_url + "/convergence/ExposeURL", method=method,
                                     data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def from_http_user(message) -> bool:
    return str(message["from"]) == HTTP_USER


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_online_account_gets_the_text_and_the_page_lists_them(method, convergence_server,
                                                                      xmpp_client):
    server = convergence_server({**PEOPLE, "carol": "offline"})
    alice, bob = xmpp_client(server, "alice"), xmpp_client(server, "bob")
    status, content_type, html = expose(server, method)
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    for client in (alice, bob):
        message = client.next("message", match=from_http_user)
        assert (message["body"], message["type"]) == ("hello, this is XMPP servlet client.", "chat")
    assert html.startswith("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")  # HTML5
    assert "<title>ThreeProtocolCommunication</title>" in html
    assert "Sent message to:<br>\nalice@example.org<br>\nbob@example.org<br>\n" in html
    assert "carol" not in html and "echo@" not in html  # offline accounts and service users get nothing


def test_the_http_user_shows_online_to_watchers(convergence_server, xmpp_client):
    server = convergence_server(PEOPLE)
    alice = xmpp_client(server, "alice", roster=True)
    expose(server)
    seen = alice.next("presence", match=lambda p: str(p["from"].bare) == HTTP_USER)
    assert seen["type"] == "available"


def test_nobody_online_says_so(convergence_server):
    server = convergence_server(PEOPLE)
    status, _, html = expose(server)
    assert status == 200
    assert "Nobody is online: no message was sent." in html and "Sent message to" not in html


def test_the_text_is_configurable(convergence_server, xmpp_client):
    server = convergence_server(PEOPLE, http={"expose_text": "hello, this is from http."})
    alice = xmpp_client(server, "alice")
    expose(server, "POST")
    assert alice.next("message", match=from_http_user)["body"] == "hello, this is from http."


def test_a_reply_to_the_http_user_is_echoed(convergence_server, xmpp_client):
    server = convergence_server(PEOPLE)
    alice = xmpp_client(server, "alice")
    expose(server)
    alice.next("message", match=from_http_user)
    alice.send_message(HTTP_USER, "hi back", subject="re", thread="t7")
    echoed = alice.next("message", match=from_http_user)
    assert (echoed["body"], echoed["subject"], echoed["thread"], echoed["type"]) == (
        "hi back", "re", "t7", "chat")
    assert str(echoed["to"]) == alice.jid


def test_a_refused_recipient_is_listed_with_the_condition(make_core):
    class Full:
        @hookimpl(tryfirst=True)
        def resolve_recipient(self, core, address):
            if address.local == "bob":
                return self

        def deliver(self, message):
            raise RoutingError("resource-constraint", "bob has too many messages waiting")

    core = make_core(plugins={"full": Full()})
    for name in ("alice", "bob"):
        core.presence.login(RecordingEndpoint(core.add_account(name, "pw").with_resource("r")))
    html = create_app(core).test_client().get("/convergence/ExposeURL").text
    assert "Sent message to:<br>\nalice@localhost<br>" in html
    assert "Could not send to:<br>\nbob@localhost (resource-constraint)<br>" in html


def test_the_page_escapes_what_it_shows():
    html = page([], [("<b>@x", "a&b")])
    assert "&lt;b&gt;@x (a&amp;b)<br>" in html and "<b>" not in html
