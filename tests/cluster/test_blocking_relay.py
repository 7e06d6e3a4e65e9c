"""Block lists (XEP-0191) across two nodes (docs/cluster.md, plugins/xmpp/blocking.py): a block
made through node A is in force on node B at once — its cached copy is replaced, its sessions
get the push and the presence effects (§3.3) — and so is the unblock (§3.4). Two nodes make the
placement of each session deterministic; two workers are two nodes on one machine (checked too)."""
from __future__ import annotations

import socket

from convergence.testing import free_port

from ..xmpp.test_blocking import block, blocker, pushed, unblock
from .helpers import available_from, chat_body, on_another_worker, worker_of

ACCOUNTS = {"alice": "a", "bob": "b"}


def test_block_and_unblock_through_one_node_hold_on_the_other(node, xmpp_client):
    a = node("node-a", ACCOUNTS)
    b = node("node-b")
    b.passwords.update(ACCOUNTS)
    laptop = blocker(xmpp_client, a, "alice", "laptop")  # alice on both nodes, bob on B
    desk = blocker(xmpp_client, b, "alice", "desk")
    bob = xmpp_client(b, "bob", resource="phone")
    a.process.wait_for(f"registered {bob.jid} ")  # each node knows the other's sessions
    b.process.wait_for(f"registered {laptop.jid} ")
    bob.send_message(a.jid("alice"), "before")  # node B reads (and caches) alice's empty list
    for client in (laptop, desk):
        client.next("message", timeout=10, match=chat_body("before"))

    block(laptop, a.jid("bob"))
    assert pushed(laptop, "blocked") == [a.jid("bob")]
    assert pushed(desk, "blocked") == [a.jid("bob")]  # pushed on node B too
    # bob (B) sees both of alice's resources go, the one on A and the one on B (§3.3) ...
    gone = {str(bob.next("presence", timeout=10, match=available_from(a.jid("alice"), "unavailable"))["from"])
            for _ in range(2)}
    assert gone == {laptop.jid, desk.jid}
    # ... and each of alice's resources sees bob go
    for client in (laptop, desk):
        client.next("presence", timeout=10, match=available_from(bob.jid, "unavailable"))
    # node B screens with the new list: bob's message is refused there (service-unavailable)
    bob.send_message(a.jid("alice"), "blocked?")
    assert bob.next("message_error", timeout=10)["error"]["condition"] == "service-unavailable"
    desk.send_message(bob.jid, "to the one I block")  # and alice's outbound on node B
    assert desk.next("message_error", timeout=10)["error"]["condition"] == "not-acceptable"

    unblock(desk, a.jid("bob"))  # through node B this time
    assert pushed(desk, "unblocked") == pushed(laptop, "unblocked") == [a.jid("bob")]
    back = {str(bob.next("presence", timeout=10, match=available_from(a.jid("alice")))["from"])
            for _ in range(2)}
    assert back == {laptop.jid, desk.jid}
    laptop.next("presence", timeout=10, match=available_from(bob.jid))
    bob.send_message(a.jid("alice"), "after")
    laptop.next("message", timeout=10, match=chat_body("after"))


def test_a_block_made_on_one_worker_holds_on_the_other(convergence_server, cluster_table, xmpp_client):
    """The same with ``serve --workers 2``: alice and bob on different workers (the kernel picks:
    bob reconnects until he lands on the other one)."""
    server = convergence_server(ACCOUNTS, server={"workers": 2}, cluster=cluster_table)
    server.process.wait_for("convergence serving")
    alice = blocker(xmpp_client, server, "alice", "a")
    bob = on_another_worker(lambda n: xmpp_client(server, "bob", resource=f"b{n}"), server,
                            worker_of(server, alice.jid))
    bob.next("presence", timeout=10, match=available_from(alice.jid))
    bob.send_message(server.jid("alice"), "before")  # bob's worker caches alice's empty list
    alice.next("message", timeout=10, match=chat_body("before"))
    block(alice, server.jid("bob"))
    pushed(alice, "blocked")
    bob.next("presence", timeout=10, match=available_from(alice.jid, "unavailable"))
    bob.send_message(server.jid("alice"), "blocked?")
    assert bob.next("message_error", timeout=10)["error"]["condition"] == "service-unavailable"
    unblock(alice, server.jid("bob"))
    bob.next("presence", timeout=10, match=available_from(alice.jid))
    bob.send_message(server.jid("alice"), "after")
    alice.next("message", timeout=10, match=chat_body("after"))


def test_a_block_on_one_node_ends_a_sipp_subscription_on_the_other(node, xmpp_client, tmp_path):
    """A stock SIP watcher across the cluster: SIPp subscribes through node B to the presence of
    an XMPP user of node A (200, NOTIFY ``active`` with PIDF ``open``) and MESSAGEs her; she
    blocks the phone on node A: node B ends the subscription with a NOTIFY
    ``terminated;reason=rejected`` (RFC 6665 §4.2.2) and answers a new SUBSCRIBE 403
    (§4.2.1.1)."""
    from sipp_runner import Sipp, request

    from ..sip.test_presence_clients import (ACCEPTED, ACCOUNTS as DEMO, DOMAIN, PHONE, USER,
                                             as_phone, expect_notify, require, subscribe)

    require("sipp", "sip-tester")
    a = node("node-a", DEMO, sip={"presence_min_expires": 1})
    b = node("node-b", sip={"presence_min_expires": 1})
    b.passwords.update(DEMO)
    user = blocker(xmpp_client, a, USER, "desk")
    b.process.wait_for(f"registered {user.jid} ")

    def sent(method: str, cseq: int, auth: bool, **fields) -> str:
        return request(method, cseq, f"sip:{USER}@{DOMAIN}", auth=auth, sender=PHONE,
                       recipient=USER, domain=DOMAIN, **fields)
    ready = dict(content_type="text/plain", body="ready")
    again = dict(headers=("Event: presence", "Expires: 600", "Accept: application/pidf+xml"))
    scenario = (
        subscribe(1, 600) + '  <recv response="407" auth="true"/>\n'
        + subscribe(2, 600) + ACCEPTED + '  <Reference variables="tag"/>\n'  # (unused here)
        + expect_notify(r"<basic>open</basic>", "active;expires=")
        + sent("MESSAGE", 3, False, **ready) + '  <recv response="407" auth="true"/>\n'
        + sent("MESSAGE", 4, True, **ready) + '  <recv response="200"/>\n'
        + expect_notify(state="terminated;reason=rejected")
        + sent("SUBSCRIBE", 5, False, **again) + '  <recv response="407" auth="true"/>\n'
        + sent("SUBSCRIBE", 6, True, **again) + '  <recv response="403"/>\n')
    sipp = Sipp(b.sip_port, tmp_path)
    process = sipp.start("blocked-watcher", scenario, free_port(socket.SOCK_DGRAM), **as_phone())
    user.next("message", timeout=15, match=lambda m: m["body"].strip() == "ready")  # watching
    block(user, a.jid(PHONE))
    pushed(user, "blocked")
    log = sipp.wait("blocked-watcher", process)
    assert "Subscription-State: terminated;reason=rejected" in log
