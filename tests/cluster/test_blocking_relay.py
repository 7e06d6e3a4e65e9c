"""Block lists (XEP-0191) across two nodes (docs/cluster.md, plugins/xmpp/blocking.py): a block
made through node A is in force on node B at once — its cached copy is replaced, its sessions
get the push and the presence effects (§3.3) — and so is the unblock (§3.4). Two nodes make the
placement of each session deterministic; two workers are two nodes on one machine (checked too)."""
from __future__ import annotations

from ..xmpp.test_blocking import block, blocker, pushed, unblock
from .helpers import available_from, chat_body
from .test_workers import worker_of

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
    home = worker_of(server, alice.jid)
    for n in range(20):
        bob = xmpp_client(server, "bob", resource=f"b{n}")
        if worker_of(server, bob.jid) != home:
            break
        bob.disconnect()
    else:
        raise AssertionError("20 connections all went to one worker")
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
