"""XMPP across two nodes beyond messages (issue 14, plugins/xmpp/cluster_relay.py): a subscription
request from a user on node A reaches the contact's resources on both nodes, the approval from
node B reaches the requester on node A with its roster push, the contact's other resource on
node A gets the roster push of the change made on node B, the presence shown on approval and
withdrawn on cancellation crosses, and directed presence (with its unavailable at logout, RFC 6121
§4.6.3) reaches a full JID on the other node."""
from __future__ import annotations

from ..xmpp.pep_client import items_of, pep_client, publish_xml
from ..xmpp.roster_client import bare, iq, manual, next_presence, next_push, send_presence

ACCOUNTS = {"alice": "a", "bob": "b", "carol": "c"}
XMPP = {"shared_roster": False}
TUNE = "http://jabber.org/protocol/tune"  # subscriptions, not the shared roster, decide who sees whom


def test_subscriptions_roster_pushes_and_directed_presence_cross_nodes(node, xmpp_client):
    a = node("node-a", ACCOUNTS, xmpp=XMPP)
    b = node("node-b", xmpp=XMPP)
    b.passwords.update(ACCOUNTS)
    alice = manual(xmpp_client, a, "alice", resource="laptop")
    phone = manual(xmpp_client, a, "bob", resource="phone")  # bob on both nodes
    desk = manual(xmpp_client, b, "bob", resource="desk")
    a.process.wait_for(f"registered {desk.jid} ")  # each node knows the other's sessions
    b.process.wait_for(f"registered {alice.jid} ")
    b.process.wait_for(f"registered {phone.jid} ")

    # alice (A) asks bob: both his resources see the request, the one on B through the cluster
    send_presence(alice, bare(desk), "subscribe")
    assert next_push(alice, bare(desk)).get("ask") == "subscribe"
    next_presence(desk, bare(alice), "subscribe", timeout=10)
    next_presence(phone, bare(alice), "subscribe", timeout=10)

    # bob approves on B: alice on A gets the answer, her roster push and bob's presence (both
    # resources); bob's resource on A gets the push of the change made on B
    send_presence(desk, bare(alice), "subscribed")
    next_push(desk, bare(alice), "from")
    next_presence(alice, bare(desk), "subscribed", timeout=10)
    next_push(alice, bare(desk), "to", timeout=10)
    next_push(phone, bare(alice), "from", timeout=10)
    next_presence(alice, desk.jid, timeout=10)
    next_presence(alice, phone.jid, timeout=10)

    # bob cancels on B (§3.2): alice on A is told, her roster says none, bob's resources go
    # unavailable for her
    send_presence(desk, bare(alice), "unsubscribed")
    next_presence(alice, bare(desk), "unsubscribed", timeout=10)
    next_push(alice, bare(desk), "none", timeout=10)
    next_push(phone, bare(alice), "none", timeout=10)
    next_presence(alice, desk.jid, "unavailable", timeout=10)

    # directed presence (§4.6) from carol on B to alice's session on A, then carol's logout
    carol = xmpp_client(b, "carol", resource="home")
    send_presence(carol, alice.jid, status="just for you")
    assert next_presence(alice, carol.jid, timeout=10)["status"] == "just for you"
    carol.disconnect()
    next_presence(alice, carol.jid, "unavailable", timeout=10)  # §4.6.3
    # and a directed presence to a session that is on neither node goes nowhere
    send_presence(desk, alice.jid.replace("laptop", "gone"), status="lost")
    alice.none("presence", wait=0.5)


def test_pep_last_items_on_approval_reach_every_node(node, xmpp_client):
    """RFC 6121 §3.1.5 + XEP-0060 §6.1.7 across nodes: bob (on both nodes, both wanting tunes)
    asks alice (node A, who has published a tune); her approval is handled on node A, and both of
    bob's sessions get her last tune — the one on node B through the cluster."""
    a = node("node-a", ACCOUNTS, xmpp=XMPP)
    b = node("node-b", xmpp=XMPP)
    b.passwords.update(ACCOUNTS)
    alice = pep_client(xmpp_client, a, "alice")  # slixmpp approves subscription requests
    here = pep_client(xmpp_client, a, "bob", notify=[TUNE], resource="here")
    there = pep_client(xmpp_client, b, "bob", notify=[TUNE], resource="there")
    a.process.wait_for(f"registered {there.jid} ")
    iq(alice, publish_xml(TUNE, "<tune xmlns='%s'><title>Something</title></tune>" % TUNE), "set")
    send_presence(here, to=a.jid("alice"), type="subscribe")
    for client in (here, there):
        [(_, payload)] = items_of(client.next("pubsub_publish", timeout=10))
        assert payload.findtext(f"{{{TUNE}}}title") == "Something"
