"""Redis stopped and started again under two nodes (a private redis-server on a port of the test's
own): each node keeps serving its own users; a message for an account with no endpoint on the
node is refused as temporary (HTTP 503 with Retry-After, an XMPP ``service-unavailable`` error of
type ``wait``) rather than stored or dropped, since whether the account is on another node is
unknown; once Redis is back the nodes announce their endpoints again, deliver across and store
for offline accounts again (issue 14, docs/cluster.md)."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from slixmpp.exceptions import PresenceError

from .helpers import api_send, available_from, chat_body

ACCOUNTS = {"alice": "a", "bob": "b", "carol": "c", "dave": "d"}


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
