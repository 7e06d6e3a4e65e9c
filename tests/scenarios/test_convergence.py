"""The original sample's story, end to end, on one real ``convergence serve``.

Each test is one numbered step of issue 5, told with real clients: slixmpp for the XMPP user
``convergence`` (password ``1``, as in the demo), SIPp for the phone ``sipuserf``, and urllib for
HTTP (the actors are in ``actors.py``).
"""
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actors import ACCOUNTS, DOMAIN, SIP, call_id, condition, received_messages, sent_by
from sipp_runner import needs_sipp

pytestmark = needs_sipp

def test_1_the_xmpp_user_logs_in_and_sees_echo_the_phone_the_http_user_and_everyone(demo, xmpp_client):
    user = xmpp_client(demo, "convergence", resource="spark", roster=True)
    roster = user.call(lambda: user.xmpp.client_roster)
    contacts = {jid: roster[jid] for jid in roster}
    for name in ("echo", "sipuserf", "httpuser", "userc"):
        jid = demo.jid(name)
        assert jid in contacts, f"{jid} missing from {sorted(contacts)}"
        assert contacts[jid]["subscription"] == "both" and "Friends" in contacts[jid]["groups"]
    user.next("presence", match=sent_by(demo.jid("echo")))  # echo is always online


def test_2_a_registered_phone_shows_online_until_it_unregisters_or_expires(demo, xmpp_client, phone):
    watcher = xmpp_client(demo, "convergence")
    phone.register(expires=300)
    online = watcher.next("presence", match=sent_by(demo.jid("sipuserf")))
    assert online["from"].resource.startswith("sip-")  # the binding, as a resource
    phone.register(expires=0)
    watcher.next("presence", match=sent_by(demo.jid("sipuserf"), "unavailable"))
    phone.register(expires=1)  # [sip] min_expires = 1 here
    watcher.next("presence", match=sent_by(demo.jid("sipuserf")))
    watcher.next("presence", match=sent_by(demo.jid("sipuserf"), "unavailable"), timeout=5)


def test_3_the_phone_writes_to_the_xmpp_user_who_gets_it_from_the_real_sender(demo, xmpp_client, phone):
    user = xmpp_client(demo, "convergence")
    phone.register()
    log = phone.send("convergence", "lunch at noon?", headers=("Subject: plans",))
    message = user.next("message")
    assert message["from"].bare == demo.jid("sipuserf") and message["type"] == "chat"
    assert (message["body"].strip(), message["subject"]) == ("lunch at noon?", "plans")  # SIPp ends bodies with CRLF
    assert message["thread"] == call_id(log)  # RFC 7572: Call-ID is the thread
    user.disconnect()
    phone.send("convergence", "call me when you are back", expect=202)  # stored for later
    back = xmpp_client(demo, "convergence")
    stored = back.next("message")
    assert stored["body"].strip() == "call me when you are back" and stored["delay"]["stamp"]


def test_4_the_xmpp_user_writes_to_the_phone_stored_while_away_errors_when_refused(demo, xmpp_client, phone):
    user = xmpp_client(demo, "convergence")
    user.send_message(demo.jid("sipuserf"), "are you there?")  # not registered: kept for her
    incoming = phone.receive()
    phone.register()  # the stored message goes out as soon as she registers
    log = incoming()
    (first,) = received_messages(log)
    assert "are you there?" in first and f"From: <sip:convergence@{DOMAIN}>" in first
    incoming = phone.receive()  # takes one MESSAGE: a typing notice must not be it (XEP-0085)
    user.call(lambda: user.xmpp.send_raw(
        f'<message to="{demo.jid("sipuserf")}" type="chat">'
        '<composing xmlns="http://jabber.org/protocol/chatstates"/></message>'))
    user.send_message(demo.jid("sipuserf"), "now?")
    assert "now?" in received_messages(incoming())[0]
    busy = phone.receive("486 Busy Here")
    user.send_message(demo.jid("sipuserf"), "hello?")
    busy()
    error = user.next("message_error")
    assert error["from"].bare == demo.jid("sipuserf")
    assert condition(error) == "recipient-unavailable"  # RFC 7247: 486 → 480's condition
    assert "486" in error["error"]["text"]


def test_5_expose_url_greets_every_online_user_from_the_http_user(demo, xmpp_client):
    convergence = xmpp_client(demo, "convergence")
    userc = xmpp_client(demo, "userc")
    with urllib.request.urlopen(f"{demo.http_url}/convergence/ExposeURL") as response:
        page = response.read().decode()
        assert response.headers.get_content_type() == "text/html"
    assert "Sent message to:" in page
    for client, name in ((convergence, "convergence"), (userc, "userc")):
        assert demo.jid(name) in page
        greeting = client.next("message")
        assert greeting["from"].bare == demo.jid("httpuser")
        assert greeting["body"] == "hello, this is XMPP servlet client."
    convergence.next("presence", match=sent_by(demo.jid("httpuser")))  # the HTTP user is online now


def test_6_the_http_user_echoes_by_default(demo, xmpp_client):
    user = xmpp_client(demo, "convergence")
    user.send_message(demo.jid("httpuser"), "anyone home?", thread="t-6")
    answer = user.next("message")
    assert answer["from"].bare == demo.jid("httpuser")
    assert (answer["body"], answer["thread"]) == ("anyone home?", "t-6")


class Bot(BaseHTTPRequestHandler):
    """A callback target: answers each POSTed message in capitals, or fails with 503 when the
    body says "fail"."""

    def do_POST(self):
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(message)
        if message["body"] == "fail":
            self.send_response(503)
            self.end_headers()
            return
        answer = message["body"].upper().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def bot():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Bot)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_6_with_a_callback_url_the_http_user_answers_through_it(convergence_server, bot, xmpp_client):
    demo = convergence_server(ACCOUNTS, sip=SIP,
                              http={"callback_url": f"http://127.0.0.1:{bot.server_port}/bot"},
                              callback={"retries": 0, "timeout": 2})
    user = xmpp_client(demo, "convergence")
    user.send_message(demo.jid("httpuser"), "shout this", thread="t-6")
    answer = user.next("message")
    assert (answer["from"].bare, answer["body"]) == (demo.jid("httpuser"), "SHOUT THIS")
    (seen,) = bot.seen
    assert (seen["from"], seen["to"], seen["body"], seen["thread"]) == (
        user.jid, demo.jid("httpuser"), "shout this", "t-6")
    user.send_message(demo.jid("httpuser"), "fail")
    error = user.next("message_error", timeout=10)
    assert error["from"].bare == demo.jid("httpuser") and condition(error)


def test_7_everyone_gets_their_words_back_from_echo_and_from_themselves(demo, xmpp_client, phone):
    user = xmpp_client(demo, "convergence")
    for to in ("echo", "convergence"):
        user.send_message(demo.jid(to), f"to {to}")
        back = user.next("message")
        assert (back["from"].bare, back["body"]) == (demo.jid(to), f"to {to}")
    phone.register()
    for to in ("echo", "sipuserf"):
        incoming = phone.receive()
        phone.send(to, f"phone to {to}")
        (got,) = received_messages(incoming())
        assert f"phone to {to}" in got and f"From: <sip:{to}@{DOMAIN}>" in got


def test_8_a_restart_keeps_registrations_rosters_and_stored_messages(demo, xmpp_client, phone):
    user = xmpp_client(demo, "convergence", roster=True)
    user.call(lambda: user.xmpp.update_roster("friend@elsewhere.example", name="Friend"))
    phone.register(expires=3600)
    user.send_message(demo.jid("userc"), "see you tomorrow")  # userc is offline: stored
    user.disconnect()

    demo.restart()

    back = xmpp_client(demo, "convergence", roster=True)
    roster = back.call(lambda: back.xmpp.client_roster)
    assert roster["friend@elsewhere.example"]["name"] == "Friend"
    back.next("presence", match=sent_by(demo.jid("sipuserf")))  # her binding is still valid
    userc = xmpp_client(demo, "userc")
    assert userc.next("message")["body"] == "see you tomorrow"
    incoming = phone.receive()
    back.send_message(demo.jid("sipuserf"), "still there?")
    assert "still there?" in received_messages(incoming())[0]
