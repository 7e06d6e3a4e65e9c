"""The API's event stream (Server-Sent Events): an HTTP client connected to it is an online
endpoint of its account — XMPP contacts see it, messages reach it instead of the offline store,
echo answers it — and it hears its contacts' presence."""
import pytest

from convergence import Message
from convergence.plugins.http.events import Stream
from convergence.store import offline

from api_client import EventStream, call

PEOPLE = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"}


@pytest.fixture
def server(convergence_server):
    return convergence_server(PEOPLE, http={"sse_keepalive": 0.2})


def presence_from(client, jid: str, kind: str | None = None):
    """The next presence ``client`` gets from exactly ``jid`` of type ``kind`` (None: available)."""
    return client.next("presence", match=lambda p: str(p["from"]) == jid and p.xml.get("type") == kind)


def test_the_stream_is_an_online_endpoint_xmpp_contacts_see(server, xmpp_client):
    bob = xmpp_client(server, "bob")
    stream = EventStream(server, "alice")
    assert stream.jid.startswith("alice@example.org/http-") and stream.jid.endswith(stream.id)
    presence_from(bob, stream.jid)  # bob sees alice online through HTTP
    stream.close()  # the client goes away: noticed at the next keep-alive write
    presence_from(bob, stream.jid, "unavailable")


def test_messages_reach_the_stream_not_the_store(server, xmpp_client):
    stream = EventStream(server, "alice")
    bob = xmpp_client(server, "bob")
    bob.send_message("alice@example.org", "hi alice", subject="s", thread="t1")
    got = stream.next("message")
    assert (got["from"], got["to"], got["type"]) == (bob.jid, "alice@example.org", "chat")
    assert (got["body"], got["subject"], got["thread"], got["stamp"], got["error"]) == \
        ("hi alice", "s", "t1", None, None)
    sent = call(server, "POST", "/api/messages", {"to": "alice@example.org", "body": "from carol"},
                user="carol")
    assert (sent.status, sent.json["outcome"]) == (200, "delivered")
    assert stream.next("message")["body"] == "from carol"


def test_stored_while_away_then_delivered_on_connect_and_stored_again_after(server, xmpp_client):
    bob = xmpp_client(server, "bob")
    first = call(server, "POST", "/api/messages", {"to": "alice@example.org", "body": "while away"},
                 user="carol")
    assert (first.status, first.json["outcome"]) == (202, "stored")
    stream = EventStream(server, "alice")
    got = stream.next("message")
    assert (got["body"], got["from"]) == ("while away", "carol@example.org")
    assert got["stamp"].endswith("Z")  # XEP-0082 UTC: when it was stored
    presence_from(bob, stream.jid)
    stream.close()
    presence_from(bob, stream.jid, "unavailable")  # logged out: messages are stored again
    again = call(server, "POST", "/api/messages", {"to": "alice@example.org", "body": "later"}, user="carol")
    assert (again.status, again.json["outcome"]) == (202, "stored")
    assert EventStream(server, "alice").next("message")["body"] == "later"


def test_echo_answers_the_stream_the_message_came_from(server):
    phone, desk = EventStream(server, "alice"), EventStream(server, "alice")
    sent = call(server, "POST", "/api/messages",
                {"to": "echo@example.org", "body": "ping", "stream": desk.id}, user="alice")
    assert (sent.status, sent.json["outcome"]) == (200, "delivered")
    answer = desk.next("message")
    assert (answer["from"], answer["to"], answer["body"]) == ("echo@example.org", desk.jid, "ping")
    # without a stream the answer goes to the account: every stream has it
    call(server, "POST", "/api/messages", {"to": "echo@example.org", "body": "all"}, user="alice")
    assert phone.next("message")["body"] == "all"  # and phone never saw "ping"
    assert desk.next("message")["body"] == "all"


def test_a_stream_of_another_account_cannot_be_named(server):
    bobs = EventStream(server, "bob")
    sent = call(server, "POST", "/api/messages",
                {"to": "echo@example.org", "body": "x", "stream": bobs.id}, user="alice")
    assert sent.status == 400 and sent.json["message"].startswith("stream:")


def test_contacts_presence_snapshot_then_changes(server, xmpp_client):
    stream = EventStream(server, "alice")
    assert stream.next("presence", match=lambda p: p["jid"] == "echo@example.org")["available"]
    bob = xmpp_client(server, "bob")
    online = stream.next("presence", match=lambda p: p["jid"] == "bob@example.org")
    assert (online["available"], online["show"]) == (True, None)
    bob.call(lambda: bob.xmpp.send_presence(pshow="away", pstatus="lunch"))
    away = stream.next("presence", match=lambda p: p["jid"] == "bob@example.org")
    assert (away["available"], away["show"], away["status"]) == (True, "away", "lunch")
    bob.disconnect()
    gone = stream.next("presence", match=lambda p: p["jid"] == "bob@example.org")
    assert gone == {"jid": "bob@example.org", "available": False, "show": None, "status": None}
    later = EventStream(server, "carol")  # the snapshot lists the available contacts
    call(server, "POST", "/api/messages", {"to": "echo@example.org", "body": "end"}, user="carol")
    snapshot = [data["jid"] for name, data in later.until("message") if name == "presence"]
    assert sorted(snapshot) == ["alice@example.org", "echo@example.org"]  # bob has gone


def test_no_presence_without_a_subscription(convergence_server, xmpp_client):
    server = convergence_server(PEOPLE, xmpp={"shared_roster": False}, http={"sse_keepalive": 0.2})
    stream = EventStream(server, "alice")
    xmpp_client(server, "bob")
    echo = call(server, "POST", "/api/messages", {"to": "echo@example.org", "body": "mark"}, user="alice")
    assert echo.status == 200
    # bob came online before the echo answer was sent: a presence event would be before it
    before = stream.until("message")
    assert before[-1][1]["body"] == "mark"
    assert [name for name, _ in before if name == "presence"] == []


def test_keep_alive_comments(server):
    stream = EventStream(server, "alice")
    assert stream.next("comment") == ": keep-alive"


def test_unauthenticated_stream_is_refused(server):
    assert EventStream(server).status == 401


def test_a_full_queue_stores_the_message_and_ends_the_stream(make_core):
    """In process: a client that does not read ends up with ``sse_queue`` events waiting."""
    core = make_core()
    alice = core.add_account("alice", "pw")
    stream = Stream(core, core.pm.get_plugin("http:server").streams, alice, max_queued=2)
    body = stream.events(keepalive=5)
    assert next(body).startswith(b"event: stream\n")  # logged in
    sender = core.address("bob")
    assert [core.send(Message(sender, alice, f"m{i}")) for i in range(2)] == ["delivered"] * 2
    assert core.send(Message(sender, alice, "overflow")) == "stored"
    assert stream.ended and offline.count(core.db, "alice") == 1
    messages = [e for e in body if e.startswith(b"event: message")]  # the queue drains, then ends
    assert len(messages) == 2 and b'"m0"' in messages[0] and b'"m1"' in messages[1]
    assert core.presence.endpoints(alice) == []


def test_a_message_to_a_stream_whose_client_left_is_stored_not_delivered(convergence_server):
    """Issue 11: the stream leaves at once when its client closes (not at the next keep-alive),
    and a message for it is stored (202), then reaches the next stream."""
    server = convergence_server(PEOPLE, http={"sse_keepalive": 60.0})
    waiting = []
    for n in range(3):  # each time the client has just gone
        stream = EventStream(server, "alice")
        # What was stored while it was away comes first. (Read before the close: bytes written to
        # a socket whose client closes unread are lost in any protocol without acknowledgements.)
        assert [stream.next("message")["body"] for _ in waiting] == waiting
        stream.close()
        sent = call(server, "POST", "/api/messages", {"to": "alice@example.org", "body": f"m{n}"},
                    user="carol")
        assert (sent.status, sent.json["outcome"]) == (202, "stored")
        waiting = [f"m{n}"]
    assert EventStream(server, "alice").next("message")["body"] == "m2"
