"""Redis stopped and started again under two nodes (a private redis-server on a port of the test's
own): each node keeps serving its own users; a message for an account with no endpoint on the
node is refused as temporary (HTTP 503 with Retry-After, an XMPP ``service-unavailable`` error of
type ``wait``) rather than stored or dropped, since whether the account is on another node is
unknown; once Redis is back the nodes announce their endpoints again, deliver across and store
for offline accounts again (issue 14, docs/cluster.md)."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from slixmpp.exceptions import PresenceError

from convergence import hookimpl
from convergence.cluster import Cluster
from convergence.testing import free_port

from .conftest import REDIS
from .helpers import api_send, available_from, chat_body

ACCOUNTS = {"alice": "a", "bob": "b", "carol": "c", "dave": "d"}


class Relay:
    """A TCP relay to the private Redis for one node: ``cut()`` closes its connections and drops
    new ones (that node alone loses Redis, the others keep theirs), ``mend()`` lets them through."""

    def __init__(self, target: int):
        self.target, self.open, self.conns = target, True, []
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self.conns += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self._lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def refused(server, name: str, password: str, to: str, body: str) -> tuple[int, str, dict]:
    """POST /api/messages expected to fail: status, Retry-After, JSON answer."""
    try:
        api_send(server, name, password, to, body)
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Retry-After"), json.load(err)
    raise AssertionError(f"{body!r} was accepted")


def error_of(stanza) -> tuple[str, str]:
    """An error message's condition and type (RFC 6120 §8.3)."""
    return stanza["error"]["condition"], stanza["error"]["type"]


def ready(server) -> tuple[int, str]:
    """/health/ready's status code and its Redis check."""
    try:
        with urllib.request.urlopen(server.http_url + "/health/ready", timeout=10) as reply:
            return reply.status, json.load(reply)["checks"]["redis"]
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)["checks"]["redis"]


def test_nodes_ride_out_a_redis_restart(private_redis, convergence_server, xmpp_client, tmp_path):
    from actors import ACCOUNTS as DEMO, SIP, Phone
    from sipp_runner import Sipp

    redis, table = private_redis
    a = convergence_server({**ACCOUNTS, "sipuserf": DEMO["sipuserf"]}, cluster={**table, "node_id": "node-a"},
                           sip=SIP)
    b = convergence_server({}, cluster={**table, "node_id": "node-b"})
    b.passwords.update(ACCOUNTS)
    alice = xmpp_client(a, "alice", resource="laptop")
    carol = xmpp_client(a, "carol", resource="home")
    bob = xmpp_client(b, "bob", resource="desk")
    alice.next("presence", timeout=10, match=available_from("bob@"))

    assert ready(a) == (200, "ok")
    mark_a, mark_b = len(a.process.output), len(b.process.output)
    redis.stop()
    a.process.wait_for("Redis unreachable", start=mark_a)
    assert ready(a) == (503, "unreachable")  # /health/ready names the failing part
    # node A still serves its own users
    assert api_send(a, "alice", "a", "carol@" + a.domain, "same node")["outcome"] == "delivered"
    carol.next("message", timeout=10, match=chat_body("same node"))
    # bob is not on node A, and without the directory node A cannot know where he is: refused
    # as temporary, neither stored (he is online elsewhere) nor dropped
    status, retry, answer = refused(a, "alice", "a", "bob@" + a.domain, "during the outage")
    assert (status, answer["condition"]) == (503, "service-unavailable") and int(retry) >= 1
    alice.send_message("bob@" + a.domain, "xmpp during the outage")
    error = alice.next("message_error", timeout=10)
    assert error_of(error) == ("service-unavailable", "wait")
    (tmp_path / "sipp").mkdir()
    phone = Phone(Sipp(a.sip_port, tmp_path / "sipp"))  # a SIP MESSAGE to bob: 503 Retry-After
    assert "Retry-After:" in phone.send("bob", "sip during the outage", expect=503)
    # dave is offline everywhere, but node A cannot know that either: refused too
    assert refused(a, "alice", "a", "dave@" + a.domain, "for dave")[0] == 503
    b.process.wait_for("Redis unreachable", start=mark_b)  # node B alike, the other way
    bob.send_message("alice@" + a.domain, "from b during the outage")
    assert error_of(bob.next("message_error", timeout=10)) == \
        ("service-unavailable", "wait")
    alice.none("message", wait=0.3)

    redis.start()
    a.process.wait_for("Redis reachable again", timeout=15, start=mark_a)
    b.process.wait_for("Redis reachable again", timeout=15, start=mark_b)
    a.process.wait_for("cluster: subscribed again", timeout=15, start=mark_a)
    assert ready(a) == (200, "ok")
    deadline = time.monotonic() + 15
    while True:  # node A learns bob's session again from node B's announcement
        answer = api_send(a, "alice", "a", "bob@" + a.domain, "after the outage")
        if answer["outcome"] == "delivered" or time.monotonic() > deadline:
            break
        a.process.wait_for("registered bob@", timeout=10, start=mark_a)
    assert answer["outcome"] == "delivered"
    bob.next("message", timeout=10, match=chat_body("after the outage"))
    bob.send_message("alice@" + a.domain, "from b after the outage")
    alice.next("message", timeout=10, match=chat_body("from b after the outage"))
    # an account offline everywhere gets its messages stored again
    assert api_send(a, "alice", "a", "dave@" + a.domain, "for dave")["outcome"] == "stored"
    dave = xmpp_client(b, "dave", resource="home")
    assert dave.next("message", timeout=10)["body"] == "for dave"  # from the store, once
    dave.none("message", wait=0.5)
    bob.none("message", wait=0.1)  # nothing of the outage was stored for bob


def test_rooms_during_a_redis_outage(private_redis, convergence_server, xmpp_client):
    """Group chat without Redis (docs/cluster.md "Group chat"): the node holding a room keeps
    serving it to its own occupants; the other node cannot tell who holds a room and refuses
    stanzas for it as temporary (``service-unavailable``, type ``wait``; HTTP 503); once Redis
    is back (empty) the holder claims its room again and the other node's users reach it."""
    from ..xmpp.test_muc import ROOM, client, create, groupchat, join, said

    redis, table = private_redis
    a = convergence_server(ACCOUNTS, cluster={**table, "node_id": "node-a"})
    b = convergence_server({}, cluster={**table, "node_id": "node-b"})
    b.passwords.update(ACCOUNTS)
    alice, carol = client(xmpp_client, a, "alice"), client(xmpp_client, a, "carol")
    bob = client(xmpp_client, b, "bob")
    create(alice, ROOM, "alice")
    join(carol, ROOM, "carol")

    mark_a, mark_b = len(a.process.output), len(b.process.output)
    redis.stop()
    a.process.wait_for("Redis unreachable", start=mark_a)
    b.process.wait_for("Redis unreachable", start=mark_b)
    groupchat(alice, ROOM, "still here")  # node A holds the room: its occupants go on
    said(carol, ROOM, "alice", "still here")
    with pytest.raises(PresenceError) as failed:  # node B cannot tell who holds it
        join(bob, ROOM, "bob")
    assert (failed.value.presence["error"]["condition"], failed.value.presence["error"]["type"]) == \
        ("service-unavailable", "wait")
    status, retry, answer = refused(b, "dave", "d", ROOM, "during the outage")
    assert (status, answer["condition"]) == (503, "service-unavailable") and int(retry) >= 1

    redis.start()
    a.process.wait_for("Redis reachable again", timeout=15, start=mark_a)
    b.process.wait_for("Redis reachable again", timeout=15, start=mark_b)
    for node in (a, b):  # subscribed again: what each node casts to the other reaches it
        node.process.wait_for("cluster: subscribed again", timeout=15, start=mark_a if node is a else mark_b)
    _, _, occupants, _ = join(bob, ROOM, "bob")  # through node A, which claimed its room again
    assert [str(p["from"]) for p in occupants] == [f"{ROOM}/alice", f"{ROOM}/carol", f"{ROOM}/bob"]
    groupchat(bob, ROOM, "after the outage")
    for c in (alice, carol, bob):
        said(c, ROOM, "bob", "after the outage")


def test_block_list_changes_made_during_a_redis_outage_reach_the_other_node(private_redis, convergence_server,
                                                                             xmpp_client):
    """XEP-0191 across an outage (docs/cluster.md, "What is not a message"): alice blocks bob via A
    while Redis is down, so node A's cast is never sent and node B keeps its cached copy; once
    Redis is back node B reads its cached lists again and does what the cast would have done —
    the push to alice's session there, bob and alice's sessions on B see each other go, B
    screens bob's messages. The unblock during a second outage comes back the same way."""
    from ..xmpp.test_blocking import block, pushed, unblock

    redis, table = private_redis
    a, b, laptop, desk, bob = alice_on_both_nodes_and_bob_on_b(convergence_server, xmpp_client, table)

    def outage(change) -> None:
        marks = len(a.process.output), len(b.process.output)
        redis.stop()
        for node, mark in zip((a, b), marks):
            node.process.wait_for("Redis unreachable", start=mark)
        change()
        redis.start()
        for node, mark in zip((a, b), marks):
            node.process.wait_for("Redis reachable again", timeout=15, start=mark)
            node.process.wait_for("cluster: subscribed again", timeout=15, start=mark)

    outage(lambda: block(laptop, a.jid("bob")))
    assert pushed(laptop, "blocked") == [a.jid("bob")]
    assert pushed(desk, "blocked") == [a.jid("bob")]  # node B read the list again
    bob.next("presence", timeout=10, match=available_from(desk.jid, "unavailable"))
    desk.next("presence", timeout=10, match=available_from(bob.jid, "unavailable"))
    bob.send_message(a.jid("alice"), "blocked?")  # node B screens with the list as it is now
    assert error_of(bob.next("message_error", timeout=10))[0] == "service-unavailable"

    outage(lambda: unblock(laptop, a.jid("bob")))
    assert pushed(desk, "unblocked") == [a.jid("bob")]
    bob.next("presence", timeout=10, match=available_from(desk.jid))
    desk.next("presence", timeout=10, match=available_from(bob.jid))
    bob.send_message(a.jid("alice"), "after")
    desk.next("message", timeout=10, match=chat_body("after"))


def test_a_block_made_on_a_node_cut_off_from_redis_holds_on_the_others_once_it_is_back(
        private_redis, convergence_server, xmpp_client):
    """Only node A loses Redis (its connections go through a relay that is cut); node B's
    subscription lives on, so B has nothing to re-read for itself. alice blocks bob through A
    meanwhile (A casts nothing); once A reaches Redis again its announcement says it was cut off,
    and B reads its cached lists again: the push, the presence, the screening follow."""
    from ..xmpp.test_blocking import block, pushed

    redis, table = private_redis
    relay = Relay(redis.port)
    try:
        a, b, laptop, desk, bob = alice_on_both_nodes_and_bob_on_b(
            convergence_server, xmpp_client, table, f"redis://127.0.0.1:{relay.port}/0")

        mark_a, mark_b = len(a.process.output), len(b.process.output)
        relay.cut()
        a.process.wait_for("Redis unreachable", start=mark_a)
        block(laptop, a.jid("bob"))
        assert pushed(laptop, "blocked") == [a.jid("bob")]
        relay.mend()
        a.process.wait_for("Redis reachable again", timeout=15, start=mark_a)
        assert pushed(desk, "blocked") == [a.jid("bob")]  # node B read the list again
        bob.next("presence", timeout=10, match=available_from(desk.jid, "unavailable"))
        bob.send_message(a.jid("alice"), "blocked?")
        assert error_of(bob.next("message_error", timeout=10))[0] == "service-unavailable"
        assert not any("Redis unreachable" in line or "subscribed again" in line
                       for line in b.process.output[mark_b:])  # node B never lost Redis
    finally:
        relay.close()


def test_a_node_back_from_an_outage_makes_the_others_read_again(make_core, redis_prefix):
    """Only node A was cut off from Redis (node B's subscription lived on, so B re-reads nothing
    for itself): A's announcement once it is back says so (``sync`` with ``again``) and B's
    plugins read again what they cache from casts (``on_cluster_resync``); a node that starts
    (a ``sync`` without it) makes nobody read again. In this process, on a real Redis: the
    members are not started, the events are given to B as its subscription would."""
    client, prefix = redis_prefix
    resyncs = []

    class Cache:
        @hookimpl
        def on_cluster_resync(self, core):
            resyncs.append(core)
    b = Cluster(make_core({"cluster": {"redis": REDIS, "prefix": prefix}}, plugins={"cache": Cache()}), "node-b")
    a = Cluster(make_core({"cluster": {"redis": REDIS, "prefix": prefix}}), "node-a")
    try:
        for again in (False, True):
            pubsub = client.pubsub()
            pubsub.subscribe(f"{prefix}events")
            assert pubsub.get_message(timeout=5)["type"] == "subscribe"
            a._announce(again=again)
            event = pubsub.get_message(timeout=5)
            pubsub.close()
            b._receive(event["channel"], event["data"])
            if b._resyncing is not None:
                b._resyncing.join(timeout=5)
            assert len(resyncs) == int(again)
    finally:
        a.redis.close()
        b.redis.close()


def alice_on_both_nodes_and_bob_on_b(convergence_server, xmpp_client, table: dict, redis_a: str | None = None):
    """Nodes A (its Redis URL ``redis_a``, if given) and B; alice with a block-list client on each
    (laptop on A, desk on B), bob on B; bob's first message to alice makes node B read (and cache)
    her empty block list. Returns (a, b, laptop, desk, bob)."""
    from ..xmpp.test_blocking import blocker

    a = convergence_server(ACCOUNTS, cluster={**table, "node_id": "node-a", **({"redis": redis_a} if redis_a else {})})
    b = convergence_server({}, cluster={**table, "node_id": "node-b"})
    b.passwords.update(ACCOUNTS)
    laptop = blocker(xmpp_client, a, "alice", "laptop")
    desk = blocker(xmpp_client, b, "alice", "desk")
    bob = xmpp_client(b, "bob", resource="phone")
    a.process.wait_for(f"registered {bob.jid} ")
    b.process.wait_for(f"registered {laptop.jid} ")
    bob.send_message(a.jid("alice"), "before")
    desk.next("message", timeout=10, match=chat_body("before"))
    return a, b, laptop, desk, bob
