"""Stream Management (XEP-0198): counters and the unacknowledged queue without I/O, session
transcripts on a real Core, then slixmpp (plugin xep_0198, resumption on) and raw clients against a
real server over STARTTLS: acknowledgements both ways, a connection killed with messages in flight
and resumed (nothing lost, nothing twice), one never resumed (its messages reach another resource
or the offline store), and resumptions refused (wrong id, another account)."""
import socket
import struct
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest

from convergence import Address, Message
from convergence.config import load
from convergence.core import Core
from convergence.plugins.xmpp.stream_management import (MODULUS, REQUEST_EVERY, AckError, Resumptions,
                                                        StreamManagement, detach, ended_elsewhere,
                                                        reattach)
from convergence.store import offline

from .test_c2s import SASL, Peer, header, login, plain, service, stream_error, svc  # noqa: F401

SM = "urn:xmpp:sm:3"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


# ---- sans-IO: counters and the queue --------------------------------------------------------------

def test_counters_wrap_at_two_to_the_32():
    sm = StreamManagement(100)
    sm.handled = MODULUS - 1
    sm.received()
    assert sm.handled == 0
    sm.sent = MODULUS - 2  # as if 2**32 - 2 stanzas had gone out and been acknowledged
    for n in range(4):
        sm.track(b"<message id='%d'/>" % n)
    assert [entry[0] for entry in sm.unacked] == [MODULUS - 1, 0, 1, 2]
    assert [e[1] for e in sm.acknowledge(0)] == [b"<message id='0'/>", b"<message id='1'/>"]
    assert sm.acknowledge(0) == []  # the same h again acknowledges nothing new
    assert len(sm.acknowledge(2)) == 2 and not sm.unacked


def test_an_h_beyond_what_was_sent_is_refused():
    sm = StreamManagement(100)
    sm.track(b"<iq/>")
    with pytest.raises(AckError):
        sm.acknowledge(2)
    with pytest.raises(AckError):
        sm.acknowledge(MODULUS)
    assert len(sm.unacked) == 1  # nothing dropped by a bad ack


def test_requests_go_out_with_the_first_stanza_then_every_few_while_unanswered():
    sm = StreamManagement(100)
    asks = [sm.track(b"<message/>") for _ in range(1 + 2 * REQUEST_EVERY)]
    assert asks == [True] + ([False] * (REQUEST_EVERY - 1) + [True]) * 2
    sm.acknowledge(3)
    assert sm.track(b"<message/>") is True  # answered: the next stanza asks again
    assert not sm.full and StreamManagement(2).full is False


def test_messages_of_an_ended_stream_lose_their_offline_stamp_and_keep_their_order():
    sm = StreamManagement(100)
    a, b = Address("bob", "example.org"), Address("alice", "example.org")
    stored = Message(a, b, "old", stamp=datetime(2026, 1, 1, tzinfo=timezone.utc))
    sm.track(b"<message/>", stored)
    sm.track(b"<presence/>")
    sm.track(b"<message/>", Message(a, b, "new"))
    assert [(m.body, m.stamp) for m in sm.messages()] == [("old", None), ("new", None)]
    assert not sm.unacked and sm.messages() == []


def test_resumption_ids_are_bound_to_their_account():
    class S:
        def __init__(self, username):
            self.username = username
    table, alice = Resumptions(), S("alice")
    token = table.add(alice)
    assert table.find(token, "alice") is alice
    assert table.find(token, "bob") is None and table.find("guess", "alice") is None
    table.discard(token, S("alice"))  # only the session it names removes it
    assert len(table) == 1
    table.discard(token, alice)
    assert table.find(token, "alice") is None


# ---- transcripts: a real Core, a recording link ----------------------------------------------------

class Timers:
    """``service.later`` for transcripts: the test fires the timers."""

    def __init__(self):
        self.pending = []

    def __call__(self, seconds, fn):
        entry = [seconds, fn]
        self.pending.append(entry)
        return lambda: entry in self.pending and self.pending.remove(entry)

    def fire(self):
        pending, self.pending = self.pending, []
        for _, fn in pending:
            fn()


@pytest.fixture
def timers(svc):
    svc.later = Timers()
    return svc.later


def sm_names(events) -> list:
    return [e.tag.split("}")[1] for e in events if isinstance(e, ET.Element) and e.tag.startswith("{" + SM)]


def enable(peer) -> str:
    [enabled] = peer.say(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    assert enabled.tag == f"{{{SM}}}enabled" and enabled.get("resume") == "true"
    return enabled.get("id")


def authenticated(svc, name="alice") -> Peer:
    """A new stream after SASL, before binding: where a resumption happens (§5)."""
    peer = Peer(svc, encrypted=True)
    peer.say(header())
    peer.say(b"<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL.encode(), plain(name, "secret")))
    peer.restart()
    [_, features] = peer.say(header())
    assert features.find(f"{{{SM}}}sm") is not None
    return peer


def online(peer) -> Peer:
    peer.say(b"<presence/>")  # initial presence: available, remembered for probes
    return peer


def bodies(events) -> list:
    return [e.findtext("{jabber:client}body") for e in events
            if isinstance(e, ET.Element) and e.tag == "{jabber:client}message"]


def chat(peer, to: str, n) -> None:
    peer.say(b"<message to='%s' type='chat'><body>%s</body></message>" % (to.encode(), str(n).encode()))


def test_enable_acks_both_ways_and_a_wrong_h_is_a_stream_error(svc, timers):
    peer = Peer(svc, encrypted=True)
    peer.say(header())
    assert sm_names(peer.say(b"<enable xmlns='urn:xmpp:sm:3'/>")) == []  # before auth: not-authorized
    assert peer.session.closed
    alice = login(svc)
    [failed] = authenticated(svc).say(b"<enable xmlns='urn:xmpp:sm:3'/>")  # not bound yet
    assert failed.tag == f"{{{SM}}}failed" and failed.find(f"{{{STANZAS}}}unexpected-request") is not None
    token = enable(alice)
    assert len(token) >= 24 and sm_names(alice.say(b"<enable xmlns='urn:xmpp:sm:3'/>")) == ["failed"]
    answer = alice.say(b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>")  # 1 each way
    assert sm_names(answer) == ["r"]  # the first unacknowledged stanza: the server asks
    alice.say(b"<presence type='probe' to='bob@example.org'/>")
    [a] = alice.say(b"<r xmlns='urn:xmpp:sm:3'/>")
    assert a.get("h") == "2"
    bob = login(svc, "bob")
    for n in range(3):
        chat(bob, "alice@example.org/phone", n)
    events = alice.say(b"")
    assert bodies(events) == ["0", "1", "2"] and sm_names(events) == []  # the request is still out
    assert len(alice.session.sm.unacked) == 4  # the ping's result and three messages
    alice.say(b"<a xmlns='urn:xmpp:sm:3' h='2'/>")
    assert [e[1].count(b"<body>") for e in alice.session.sm.unacked] == [1, 1]
    assert stream_error(alice.say(b"<a xmlns='urn:xmpp:sm:3' h='9'/>")) == "undefined-condition"


def test_hostile_numbers_get_a_clear_answer_and_others_are_served(svc, timers):
    alice, bob = login(svc), login(svc, "bob")
    [enabled] = alice.say(b"<enable xmlns='urn:xmpp:sm:3' resume='true' max='%s'/>" % (b"9" * 5000))
    assert enabled.get("max") == "300"  # resume_timeout, the limit
    assert stream_error(alice.say(b"<a xmlns='urn:xmpp:sm:3' h='%s'/>" % (b"1" * 5000))) == "undefined-condition"
    assert stream_error(bob.say(b"<a xmlns='urn:xmpp:sm:3' h='0'/>")) == "unsupported-stanza-type"  # not enabled
    carol = authenticated(svc, "alice")
    [failed] = carol.say(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='-1'/>" % enabled.get("id").encode())
    assert failed.find(f"{{{STANZAS}}}item-not-found") is not None  # that session is gone
    [result] = carol.say(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert result.get("type") == "result"


def test_a_dead_connection_hibernates_and_a_resumption_resends_only_what_was_not_handled(svc, timers):
    alice, bob = online(login(svc)), login(svc, "bob")
    token = enable(alice)
    for n in range(4):
        chat(bob, "alice@example.org/phone", n)
    assert bodies(alice.say(b"")) == ["0", "1", "2", "3"]
    alice.link.close("read failed: connection reset")  # the client vanished without a word
    alice.session.connection_lost()
    old = alice.session
    assert not old.closed and old.sm.hibernated and len(timers.pending) == 1
    assert svc.resumptions.hibernated() == 1  # the metric
    assert svc.core.presence.endpoint(old.address) is old  # still available to everyone
    chat(bob, "alice@example.org", 4)  # to the bare JID: queued for the resumption
    assert offline.count(svc.core.db, "alice") == 0
    stored = Message(Address("bob", "example.org"), Address("alice", "example.org"), "kept")
    svc.core.router.returned(stored)  # a message given back meanwhile (another closing stream)
    assert offline.count(svc.core.db, "alice") == 1  # not taken by the hibernated session

    wrong = authenticated(svc, "bob")  # another account cannot take it over
    [failed] = wrong.say(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token.encode())
    assert failed.find(f"{{{STANZAS}}}item-not-found") is not None
    new = authenticated(svc)
    assert sm_names(new.say(b"<resume xmlns='urn:xmpp:sm:3' previd='nonsense' h='0'/>")) == ["failed"]
    events = new.say(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='2'/>" % token.encode())
    resumed = events[0]
    assert (resumed.tag, resumed.get("previd"), resumed.get("h")) == (f"{{{SM}}}resumed", token, "0")
    assert bodies(events) == ["2", "3", "4", "kept"]  # 0 and 1 were handled: not again
    assert offline.count(svc.core.db, "alice") == 0  # then what was stored meanwhile
    session = new.session
    assert session.address == old.address and old.closed and not timers.pending
    assert svc.resumptions.hibernated() == 0
    assert svc.core.presence.endpoint(session.address) is session and svc.session(session.address) is session
    assert session.presence.available and svc.last_presence[session.address][0] is session
    chat(bob, "alice@example.org/phone", 5)
    assert bodies(new.say(b"<a xmlns='urn:xmpp:sm:3' h='6'/>")) == ["5"]
    new.session.close()  # a clean end: the unacknowledged message goes back to the router
    new.link.close("closed")
    new.session.connection_lost()
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["5"]


def test_a_stream_not_resumed_in_time_gives_its_messages_back_once(svc, timers):
    alice, bob = online(login(svc)), login(svc, "bob")
    [enabled] = alice.say(b"<enable xmlns='urn:xmpp:sm:3' resume='true' max='60'/>")
    token = enabled.get("id")
    assert enabled.get("max") == "60"  # the client asked for less than resume_timeout (300)
    chat(bob, "alice@example.org/phone", "a")
    alice.session.idle(), alice.session.idle()  # pinged, no answer: a dead connection
    assert stream_error(alice.say(b"")) == "connection-timeout" and alice.link.closed
    alice.session.connection_lost()  # the transport, once the connection closed
    assert alice.session.sm.hibernated and not alice.session.closed and timers.pending[0][0] == 60
    chat(bob, "alice@example.org/phone", "b")
    timers.fire()  # resume_timeout passed
    assert alice.session.closed and svc.core.presence.endpoint(alice.session.address) is None
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["a", "b"]
    new = authenticated(svc)
    assert sm_names(new.say(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token.encode())) == ["failed"]


def test_a_hibernated_stream_gives_its_messages_back_when_the_server_stops(svc, timers):
    alice, bob = online(login(svc)), login(svc, "bob")
    enable(alice)
    alice.link.close("read failed: connection reset")
    alice.session.connection_lost()
    chat(bob, "alice@example.org/phone", "while hibernated")
    svc.shutdown()  # system-shutdown for every stream: the hibernated one ends for good
    assert alice.session.closed and not timers.pending
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["while hibernated"]


def test_without_resumption_a_dead_connection_ends_the_session_and_gives_back_at_once(svc, timers):
    alice, bob = online(login(svc)), login(svc, "bob")
    [enabled] = alice.say(b"<enable xmlns='urn:xmpp:sm:3'/>")
    assert enabled.get("id") is None and enabled.get("resume") is None
    chat(bob, "alice@example.org/phone", "read but not acknowledged")
    alice.link.close("read failed: connection reset")
    alice.session.connection_lost()
    assert alice.session.closed and not timers.pending
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["read but not acknowledged"]


def test_resuming_replaces_a_connection_still_open_and_an_overflow_ends_the_session(service):
    svc = service(sm_max_unacked=3)
    svc.core.add_account("alice", "secret")
    svc.core.add_account("bob", "secret")
    alice, bob = online(login(svc)), login(svc, "bob")
    token = enable(alice)
    chat(bob, "alice@example.org/phone", 0)
    new = authenticated(svc)  # the server had not noticed the old connection died
    assert bodies(new.say(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token.encode())) == ["0"]
    assert stream_error(alice.say(b"")) == "conflict" and alice.link.closed
    alice.session.connection_lost()  # its transport reports the end: nothing changes
    assert svc.core.presence.endpoint(new.session.address) is new.session and not new.session.closed
    for n in range(1, 4):  # the fourth unacknowledged stanza is one too many
        chat(bob, "alice@example.org/phone", n)
    assert stream_error(new.say(b"")) == "resource-constraint"
    new.link.close("closed")
    new.session.connection_lost()
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["0", "1", "2", "3"]


def test_a_resumption_on_another_cluster_node_ends_the_session_here(svc, timers):
    """The cast another node sends when a client resumes there with this node's id (``ENDED``,
    docs/cluster.md): only for the account that authenticated there; the session ends at once —
    a connection still open is closed without a word — and its unacknowledged messages are
    stored for the fresh session. A cast that is not of strings is a ValueError (logged by the
    plugin)."""
    alice, bob = online(login(svc)), login(svc, "bob")
    token = enable(alice)
    chat(bob, "alice@example.org/phone", 0)
    assert bodies(alice.say(b"")) == ["0"]
    ended_elsewhere(svc, {"id": token, "user": "bob", "node": "other"})
    assert not alice.session.closed  # bob's authentication does not end alice's session
    with pytest.raises(ValueError):
        ended_elsewhere(svc, {"id": token, "user": None, "node": "other"})
    ended_elsewhere(svc, {"id": token, "user": "alice", "node": "other"})
    assert alice.session.closed and alice.link.closed and not alice.say(b"")
    assert svc.core.presence.endpoint(alice.session.address) is None
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["0"]
    assert not timers.pending  # nothing waits for resume_timeout


def test_a_session_moving_to_another_node_holds_what_comes_and_ends_here_when_not_taken(svc, timers):
    """``detach`` (another node asked for the session, sm_cluster.py): the still open connection
    ends with ``conflict``, the timer and id are void, and the session, closed, holds what comes
    for it (a message, a directed presence) for the other node — a message from the offline
    store stays stored. ``reattach`` (the other node did not take it): the session ends here for
    good, contacts see it go, and its messages, those that came while it moved after the
    unacknowledged one, go to the offline store in order."""
    alice, bob = online(login(svc)), online(login(svc, "bob"))
    alice.say(b"")  # bob's presence
    token = enable(alice)
    chat(bob, "alice@example.org/phone", 0)
    assert bodies(alice.say(b"")) == ["0"]
    session = alice.session
    sm = detach(session)
    assert stream_error(alice.say(b"")) == "conflict" and alice.link.closed
    assert sm.unacked and session.sm is None and session.closed and not timers.pending
    assert svc.resumptions.find(token, "alice") is None
    assert svc.core.presence.endpoint(session.address) is session  # no unavailable meanwhile
    chat(bob, "alice@example.org/phone", 1)
    bob.say(b"<presence to='alice@example.org/phone'/>")
    svc.core.router.returned(Message(Address("bob", "example.org"), Address("alice", "example.org"), "kept"))
    assert [getattr(m, "body", None) for m in session.moving] == ["1", None]  # the message, the presence
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["kept"]
    session.connection_lost()  # the transport, once the old connection closed: nothing more
    assert svc.core.presence.endpoint(session.address) is session

    reattach(session, sm)
    assert session.moving is None and svc.core.presence.endpoint(session.address) is None
    assert [m.body for _, m in offline.pending(svc.core.db, "alice", 10)] == ["kept", "0", "1"]
    [gone] = [e for e in bob.say(b"") if e.get("from") == "alice@example.org/phone"]
    assert gone.get("type") == "unavailable"


# ---- real clients over STARTTLS ------------------------------------------------------------------

def test_slixmpp_resumes_a_killed_connection_and_gets_every_message_once(xmpp_server, xmpp_client):
    """slixmpp enables SM with resumption after binding; the test counts the server's acks of
    its stanzas, then kills alice's TCP connection (no </stream:stream>) while bob's messages are
    in flight, sends more while she is away, and has her reconnect: she resumes and has every
    message exactly once, in order."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = xmpp_client(server, "alice", plugins=("xep_0198",))
    bob = xmpp_client(server, "bob")
    sm = alice.xmpp.plugin["xep_0198"]
    assert alice.call(lambda: sm.sm_id) and alice.call(lambda: sm.enabled_out)
    acked = alice.watch("stanza_acked")
    for n in range(7):
        alice.send_message(server.jid("bob"), f"to bob {n}")
    alice.call(sm.request_ack)  # (slixmpp also asks by itself every 5 stanzas)
    while alice.call(lambda: sm.unacked_queue):  # the server's <a h/> counted every stanza
        acked.get(timeout=5)
    assert alice.call(lambda: sm.last_ack == sm.seq > 7)
    assert [bob.next("message")["body"] for _ in range(7)] == [f"to bob {n}" for n in range(7)]

    def kill_at_five(message):  # on alice's loop: her socket dies, what follows is not read
        if message["body"] == "5":
            alice.xmpp.transport.abort()
    alice.call(alice.xmpp.add_event_handler, "message", kill_at_five)
    for n in range(20):
        bob.send_message(server.jid("alice", "test"), str(n))
    alice.next("disconnected", timeout=10)
    bob.call(bob.xmpp.get_roster)  # answered after every message before it was routed
    for n in range(20, 25):  # while she is away: queued for her on the server
        bob.send_message(server.jid("alice", "test"), str(n))
    bob.call(bob.xmpp.get_roster)
    resumed = alice.watch("session_resumed")
    alice.call(alice.xmpp.connect, "127.0.0.1", server.port)
    resumed.get(timeout=10)
    received = []
    while len(received) < 25:
        received.append(alice.next("message", timeout=10)["body"])
    alice.none("message", wait=0.5)
    assert received == [str(n) for n in range(25)]  # nothing lost, nothing twice, in order


def kill(raw) -> None:
    """Close a raw client's socket with a reset, as a phone that loses its network does."""
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sock.close()


def raw_messages(raw, count: int) -> list:
    """The next ``count`` messages a raw client reads (one read may bring several)."""
    found, message = [], "{jabber:client}message"
    while len(found) < count:
        events = raw.read(lambda e: getattr(e, "tag", "") == message)
        assert events, f"{len(found)} messages of {count}"
        found += [e for e in events if getattr(e, "tag", "") == message]
    return found


def raw_sm(raw_client, server, name, resource="raw"):
    """A raw client logged in with SM and resumption enabled and initial presence; returns
    (client, resumption id)."""
    raw = raw_client(server)
    raw.login(name, server.passwords[name], resource)
    raw.send(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    enabled = raw.next("enabled")
    assert enabled.get("resume") == "true" and int(enabled.get("max")) == int(
        server.config["xmpp"].get("resume_timeout", 300))
    raw.send(b"<presence/>")
    raw.next("presence")
    return raw, enabled.get("id")


def test_a_stream_not_resumed_gives_its_messages_to_another_resource(xmpp_server, raw_client,
                                                                     xmpp_client):
    """alice's phone (raw, SM with resumption) reads three messages without acknowledging them
    and loses its network; one more comes while it hibernates, still available to others. When
    ``resume_timeout`` has passed, her desk (slixmpp) gets the four once each, in order, then
    the phone's unavailable presence."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, resume_timeout=2)
    phone, _ = raw_sm(raw_client, server, "alice", "phone")
    desk = xmpp_client(server, "alice", resource="desk")
    bob = xmpp_client(server, "bob")
    for n in range(3):
        bob.send_message(server.jid("alice", "phone"), f"m{n}")
    assert [m.findtext("{jabber:client}body") for m in raw_messages(phone, 3)] == ["m0", "m1", "m2"]
    kill(phone)
    bob.send_message(server.jid("alice", "phone"), "m3")
    bob.call(bob.xmpp.get_roster)
    desk.next("presence", timeout=15, match=lambda p: p["from"] == server.jid("alice", "phone")
              and p["type"] == "unavailable")  # once resume_timeout passed, then the messages
    assert [desk.next("message", timeout=10)["body"] for _ in range(4)] == ["m0", "m1", "m2", "m3"]
    desk.none("message", wait=0.3)
    core = Core.create(load(None, server.config))  # the server's database, seen from the test
    try:
        assert offline.count(core.db, "alice") == 0  # delivered to the desk, not left stored
    finally:
        core.close()


def test_resumption_is_refused_to_another_account_and_to_a_wrong_id(xmpp_server, raw_client):
    """A raw client's hibernated stream: bob cannot resume it with its id (item-not-found, and his
    stream can still bind), a wrong id fails the same way, and alice resumes with the right one:
    the messages she had not acknowledged come again, after <resumed/>."""
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    phone, token = raw_sm(raw_client, server, "alice", "phone")
    bob = raw_client(server)
    bob.login("bob", "pw-b")
    bob.send(b"<message to='alice@example.org/phone' type='chat'><body>unacked</body></message>")
    assert phone.next("message").findtext("{jabber:client}body") == "unacked"
    kill(phone)
    thief = raw_client(server)
    thief.login("bob", "pw-b", bind=False)
    thief.send(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token.encode())
    failed = thief.next("failed")
    assert failed.find(f"{{{STANZAS}}}item-not-found") is not None
    thief.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert thief.next("iq").get("type") == "result"
    again = raw_client(server)
    again.login("alice", "pw-a", bind=False)
    again.send(b"<resume xmlns='urn:xmpp:sm:3' previd='x%s' h='0'/>" % token.encode())
    assert again.next("failed").find(f"{{{STANZAS}}}item-not-found") is not None
    again.send(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='1'/>" % token.encode())
    events = again.read(lambda e: getattr(e, "tag", "").endswith("}message"))
    names = [e.tag.split("}")[1] for e in events]
    assert names[0] == "resumed" and "message" in names
    [message] = [e for e in events if e.tag == "{jabber:client}message"]
    # h='1' acknowledged the presence echo; the message was not: it comes again
    assert message.findtext("{jabber:client}body") == "unacked"


def test_a_resumed_session_keeps_what_other_modules_know_of_it(svc, timers):
    """Modules that remember session objects follow the ``resumed`` event: the blocklist pushes
    (XEP-0191) reach the new stream."""
    alice = online(login(svc))
    alice.say(b"<iq type='get' id='l'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
    token = enable(alice)
    alice.link.close("read failed: connection reset")
    alice.session.connection_lost()
    new = authenticated(svc)
    assert sm_names(new.say(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token.encode())) == ["resumed"]
    events = new.say(b"<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'>"
                     b"<item jid='spam@example.net'/></block></iq>")
    pushes = [e for e in events if isinstance(e, ET.Element) and e.get("type") == "set"]
    assert len(pushes) == 1 and pushes[0].find("{urn:xmpp:blocking}block") is not None
