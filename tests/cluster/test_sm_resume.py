"""XEP-0198 §5 across nodes (plugins/xmpp/sm_cluster.py, docs/cluster.md): a client whose
connection died resumes its session on another node than the one that issued its resumption id.
That node asks the holder for the session and resumes it: ``<resumed/>``, exactly the stanzas the
client's ``h`` did not acknowledge, once, then live messages there; contacts never see the session
go unavailable. A holder that is dead: ``item-not-found`` at once, and what came meanwhile is in
the offline store for the fresh session. A holder that answers too late: the answer is not taken
(its claim says the asking node gave up), and the holder ends the session itself: contacts see it
go, its messages reach the fresh session once. Redis unreachable: ``item-not-found`` at once.
A session in a chat room moves with it: the new node tells it when the room's node is lost."""
from __future__ import annotations

import queue
import re
import signal
import time

import pytest

from convergence.cluster import node_tag

from ..xmpp.test_stream_management import STANZAS, kill, raw_messages, raw_sm
from .helpers import api_send, worker_of

ACCOUNTS = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c", "dave": "pw-d"}
SM = "{urn:xmpp:sm:3}"
STANZA_TAGS = {"{jabber:client}message", "{jabber:client}presence", "{jabber:client}iq"}
BODY = "{jabber:client}body"


class Counted:
    """A raw client's stanzas since stream management was enabled or the stream resumed: the
    client's ``h`` is ``base`` plus how many it got (XEP-0198 §4)."""

    def __init__(self, raw, base: int = 0, events=()):
        self.raw, self.base, self.stanzas = raw, base, []
        self.add(events)

    def add(self, events) -> None:
        self.stanzas += [e for e in events if getattr(e, "tag", "") in STANZA_TAGS]

    @property
    def h(self) -> int:
        return self.base + len(self.stanzas)

    def bodies(self) -> list[str]:
        return [e.findtext(BODY) for e in self.stanzas if e.tag == "{jabber:client}message"]

    def until(self, done, timeout: float = 10) -> None:
        """Read until ``done()`` is true."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"only {self.bodies()}"
            self.add(self.raw.read(lambda e: True, timeout=deadline - time.monotonic()))

    def nonza(self, local: str) -> object:
        """The next ``urn:xmpp:sm:3`` element ``local`` (the stanzas before it counted)."""
        found = []
        while not found:
            events = self.raw.read(lambda e: getattr(e, "tag", "") == SM + local)
            assert events, f"no <{local}/>"
            self.add(events)
            found = [e for e in events if getattr(e, "tag", "") == SM + local]
        return found[0]

    def quiet(self, wait: float = 0.5) -> None:
        """Nothing more comes within ``wait`` seconds (counted all the same: pings, presence)."""
        before = self.bodies()
        self.add(self.raw.read(lambda e: False, timeout=wait))
        assert self.bodies() == before, f"more messages: {self.bodies()[len(before):]}"


def enabled_phone(raw_client, server, name: str, resource: str) -> tuple[Counted, str]:
    """A raw client with resumption enabled and initial presence, counting from ``<enabled/>``."""
    raw = raw_client(server)
    raw.login(name, server.passwords[name], resource)
    raw.send(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    events = raw.read(lambda e: getattr(e, "tag", "") == SM + "enabled")
    at = next(i for i, e in enumerate(events) if getattr(e, "tag", "") == SM + "enabled")
    phone = Counted(raw, events=events[at + 1:])
    raw.send(b"<presence><status>on the move</status></presence>")
    phone.until(lambda: any(e.tag == "{jabber:client}presence" for e in phone.stanzas))
    return phone, events[at].get("id")


def resume(raw_client, server, token: str, h: int) -> tuple[Counted, object]:
    """A new connection to ``server`` resuming ``token`` with ``h``: (the counted stream, the
    ``<resumed/>`` or ``<failed/>`` element)."""
    raw = raw_client(server)
    raw.login("alice", ACCOUNTS["alice"], bind=False)
    raw.send(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='%d'/>" % (token.encode(), h))
    answer = (SM + "resumed", SM + "failed")
    events = raw.read(lambda e: getattr(e, "tag", "") in answer)
    at = next(i for i, e in enumerate(events) if getattr(e, "tag", "") in answer)
    return Counted(raw, h, events[at + 1:]), events[at]


def unavailable_from(client, jid: str) -> list:
    """The ``unavailable`` presences from ``jid`` that ``client`` got so far."""
    found, presences = [], client.queues["presence"]
    while True:
        try:
            p = presences.get_nowait()
        except queue.Empty:
            return found
        if str(p["from"]) == jid and p["type"] == "unavailable":
            found.append(p)


@pytest.mark.parametrize("noticed", [True, False], ids=["hibernated", "connection-still-open"])
def test_a_session_resumes_on_another_node(node, raw_client, xmpp_client, noticed):
    """alice's phone enables resumption on node A, gets m0–m2 and acknowledges m0; its network
    goes (A notices, and the session hibernates; or A has not noticed yet), and m3, m4 come for
    it meanwhile. It resumes on node B with its ``h``: ``<resumed/>`` with A's count of what the
    phone sent, then m1–m4 once each, then m5 live on B. Her contacts, bob on B, carol on A and
    dave on node C (which sees the session move between two other nodes), never see the phone go
    unavailable, and a resource of bob's that logs in on B then is shown her last presence. The
    phone then loses B too and resumes on A again (the id names A, the session is B's): only what
    B sent since, m6; m7 from node C reaches it on A."""
    a = node("node-a", ACCOUNTS)
    b, c = node("node-b"), node("node-c")
    b.passwords.update(ACCOUNTS)
    c.passwords.update(ACCOUNTS)
    phone, token = enabled_phone(raw_client, a, "alice", "phone")
    assert token.startswith(node_tag("node-a") + ".")
    jid = a.jid("alice", "phone")
    bob = xmpp_client(b, "bob", resource="desk")
    carol = xmpp_client(a, "carol", resource="home")
    dave = xmpp_client(c, "dave", resource="home")
    b.process.wait_for(f"registered {jid} ")
    for contact in (bob, carol, dave):
        contact.next("presence", timeout=10, match=lambda p: str(p["from"]) == jid and p["type"] == "available")

    for n in range(3):
        assert api_send(b, "bob", "pw-b", jid, f"m{n}")["outcome"] == "delivered"
    phone.until(lambda: len(phone.bodies()) == 3)
    h = next(i for i, e in enumerate(phone.stanzas) if e.findtext(BODY) == "m0") + 1
    phone.raw.send(b"<a xmlns='urn:xmpp:sm:3' h='%d'/><r xmlns='urn:xmpp:sm:3'/>" % h)
    assert phone.nonza("a").get("h") == "1"  # the <a/> was taken: the phone sent one stanza
    if noticed:
        kill(phone.raw)
    for n in (3, 4):  # taken by A's session, which holds them until acknowledged
        assert api_send(b, "bob", "pw-b", jid, f"m{n}")["outcome"] == "delivered"

    fresh, answer = resume(raw_client, b, token, h)
    assert answer.tag == SM + "resumed" and answer.get("previd") == token and answer.get("h") == "1"
    fresh.until(lambda: len(fresh.bodies()) == 4)
    assert fresh.bodies() == ["m1", "m2", "m3", "m4"]
    a.process.wait_for("alice@example.org/phone moved to node node-b")
    b.process.wait_for("alice@example.org/phone resumed here from node node-a")
    assert api_send(a, "bob", "pw-b", jid, "m5")["outcome"] == "delivered"  # through the directory
    fresh.until(lambda: len(fresh.bodies()) == 5)
    fresh.quiet()
    assert fresh.bodies() == ["m1", "m2", "m3", "m4", "m5"]
    c.process.wait_for("alice@example.org/phone moved from node node-a to node node-b")
    for contact in (bob, carol, dave):
        assert not unavailable_from(contact, jid)
    laptop = xmpp_client(b, "bob", resource="laptop")  # B answers his probe with her last presence
    seen = laptop.next("presence", timeout=10, match=lambda p: str(p["from"]) == jid)
    assert (seen["type"], seen["status"]) == ("available", "on the move")
    if not noticed:  # A ended the old connection (conflict, §5)
        assert phone.raw.stream_error() == "conflict"

    kill(fresh.raw)
    assert api_send(b, "bob", "pw-b", jid, "m6")["outcome"] == "delivered"
    again, answer = resume(raw_client, a, token, fresh.h)
    assert answer.tag == SM + "resumed"
    again.until(lambda: "m6" in again.bodies())
    again.quiet()
    assert again.bodies() == ["m6"]
    b.process.wait_for("alice@example.org/phone moved to node node-a")
    c.process.wait_for("alice@example.org/phone moved from node node-b to node node-a")
    assert api_send(c, "dave", "pw-d", jid, "m7")["outcome"] == "delivered"  # C knows it is on A
    again.until(lambda: "m7" in again.bodies())
    assert again.bodies() == ["m6", "m7"]
    for contact in (bob, carol, dave):
        assert not unavailable_from(contact, jid)


@pytest.mark.parametrize("lost", [True, False], ids=["node-lost", "not-yet-lost"])
def test_resuming_a_session_of_a_dead_node(node, raw_client, lost):
    """Node A, which holds alice's session, is killed. Her phone resumes on B, before or after
    B counts A as lost: ``item-not-found`` at once (nobody listens on A's inbox, or A is gone
    from the directory), and the message sent meanwhile is in the offline store for the session
    she binds afresh."""
    a = node("node-a", ACCOUNTS)
    b = node("node-b")
    b.passwords.update(ACCOUNTS)
    phone, token = raw_sm(raw_client, a, "alice", "phone")
    b.process.wait_for(f"registered {a.jid('alice', 'phone')} ")
    a.process.proc.send_signal(signal.SIGKILL)
    if lost:
        b.process.wait_for("node node-a lost")
    assert api_send(b, "bob", "pw-b", a.jid("alice"), "while A was dead")["outcome"] == "stored"

    started = time.monotonic()
    fresh = raw_client(b)
    fresh.login("alice", ACCOUNTS["alice"], bind=False)
    fresh.send(b"<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token.encode())
    assert fresh.next("failed").find(f"{{{STANZAS}}}item-not-found") is not None
    assert time.monotonic() - started < 3
    fresh.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               b"<resource>again</resource></bind></iq>")
    assert fresh.next("iq").get("type") == "result"
    fresh.send(b"<presence/>")
    assert [m.findtext(BODY) for m in raw_messages(fresh, 1)] == ["while A was dead"]


def test_resuming_on_another_node_without_redis(private_redis, convergence_server, raw_client):
    """Redis stops: a resumption on node B of a session node A holds gets ``item-not-found`` at
    once (B cannot ask A), and the client binds afresh on B."""
    redis, table = private_redis
    a = convergence_server(ACCOUNTS, cluster={**table, "node_id": "node-a"})
    b = convergence_server({}, cluster={**table, "node_id": "node-b"})
    b.passwords.update(ACCOUNTS)
    phone, token = raw_sm(raw_client, a, "alice", "phone")
    b.process.wait_for(f"registered {a.jid('alice', 'phone')} ")
    mark = len(b.process.output)
    redis.stop()
    b.process.wait_for("Redis unreachable", start=mark)
    kill(phone)

    started = time.monotonic()
    fresh, answer = resume(raw_client, b, token, 0)
    assert answer.tag == SM + "failed" and answer.find(f"{{{STANZAS}}}item-not-found") is not None
    assert time.monotonic() - started < 3
    fresh.raw.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   b"<resource>again</resource></bind></iq>")
    assert fresh.raw.next("iq").get("type") == "result"


def test_an_answer_that_comes_too_late_is_not_taken(convergence_server, cluster_table, raw_client,
                                                    xmpp_client):
    """Node A, holding alice's session with m0 and m1 unacknowledged, is stopped (SIGSTOP) while
    her phone resumes on node B: B gives up waiting after ``handoff_timeout`` (``item-not-found``;
    the phone binds afresh). A, continued, gives the session up and answers, but B does not take
    the answer (its claim says B gave up): A ends the session itself — bob sees it go — and m0 and
    m1 reach the fresh session on B, once."""
    table = {**cluster_table, "node_timeout": 5.0}  # A stays a member while it is stopped
    a = convergence_server(ACCOUNTS, cluster={**table, "node_id": "node-a"})
    b = convergence_server({}, cluster={**table, "node_id": "node-b"})
    b.passwords.update(ACCOUNTS)
    phone, token = raw_sm(raw_client, a, "alice", "phone")
    jid = a.jid("alice", "phone")
    bob = xmpp_client(b, "bob", resource="desk")
    b.process.wait_for(f"registered {jid} ")
    for n in range(2):
        assert api_send(b, "bob", "pw-b", jid, f"m{n}")["outcome"] == "delivered"
    assert [m.findtext(BODY) for m in raw_messages(phone, 2)] == ["m0", "m1"]
    kill(phone)

    a.process.proc.send_signal(signal.SIGSTOP)
    try:
        fresh, answer = resume(raw_client, b, token, 0)
        assert answer.tag == SM + "failed" and answer.find(f"{{{STANZAS}}}item-not-found") is not None
        b.process.wait_for("node node-a did not answer xmpp.sm-take")
    finally:
        a.process.proc.send_signal(signal.SIGCONT)
    fresh.raw.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   b"<resource>again</resource></bind></iq><presence/>")
    a.process.wait_for("node node-b did not take the session alice@example.org/phone")
    bob.next("presence", timeout=10, match=lambda p: str(p["from"]) == jid and p["type"] == "unavailable")
    fresh.until(lambda: len(fresh.bodies()) == 2)
    fresh.quiet()
    assert fresh.bodies() == ["m0", "m1"]


def test_a_session_in_a_room_moves_with_its_rooms(node, raw_client, xmpp_client):
    """alice's phone is in a room node A holds (bob made it) when it resumes on node B; it is
    still an occupant (bob's message reaches it on B), and when node A is killed, node B tells
    it the room is gone (XEP-0045 §11.2, status 332)."""
    from ..xmpp.test_muc import ROOM, client, create, groupchat

    a = node("node-a", ACCOUNTS)
    b = node("node-b")
    b.passwords.update(ACCOUNTS)
    bob = client(xmpp_client, a, "bob")
    create(bob, ROOM, "bob")
    phone, token = enabled_phone(raw_client, a, "alice", "phone")
    phone.raw.send(b"<presence to='%s/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
                   % ROOM.encode())
    phone.until(lambda: any(e.get("from") == f"{ROOM}/alice" for e in phone.stanzas))
    kill(phone.raw)

    fresh, answer = resume(raw_client, b, token, phone.h)
    assert answer.tag == SM + "resumed"
    groupchat(bob, ROOM, "still in")
    fresh.until(lambda: "still in" in fresh.bodies())
    a.process.proc.send_signal(signal.SIGKILL)
    gone = "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}status[@code='332']"
    fresh.until(lambda: any(e.get("from") == f"{ROOM}/alice" and e.find(gone) is not None
                            for e in fresh.stanzas))


def test_a_session_resumes_on_the_other_worker(convergence_server, cluster_table, raw_client):
    """``serve`` with 2 workers: alice's phone enables resumption on one; each time its
    connection dies with the last message read but not acknowledged, it resumes on a new
    connection, which the kernel gives to either worker (SO_REUSEPORT), until one lands on the
    other worker: that one takes the session over, and the unacknowledged message comes again,
    once, wherever the stream resumed."""
    server = convergence_server(ACCOUNTS, server={"workers": 2}, cluster=cluster_table)
    server.process.wait_for("convergence serving")
    phone, token = enabled_phone(raw_client, server, "alice", "phone")
    jid = server.jid("alice", "phone")
    home = worker_of(server, jid)
    for n in range(20):
        assert api_send(server, "bob", "pw-b", jid, f"m{n}")["outcome"] == "delivered"
        phone.until(lambda: f"m{n}" in phone.bodies())
        h = phone.base + next(i for i, e in enumerate(phone.stanzas) if e.findtext(BODY) == f"m{n}")
        kill(phone.raw)
        mark = len(server.process.output)
        phone, answer = resume(raw_client, server, token, h)
        assert answer.tag == SM + "resumed" and answer.get("previd") == token
        phone.until(lambda: f"m{n}" in phone.bodies())
        phone.quiet(0.2)
        assert phone.bodies() == [f"m{n}"]
        worker = re.search(r"/(w\d+) INFO", server.process.wait_for(f"login {jid} ", start=mark)).group(1)
        if worker != home:
            server.process.wait_for(f"{jid} resumed here from node", start=mark)
            break
    else:
        raise AssertionError("20 connections all went to one worker")
