"""An external component (XEP-0114) across two nodes (plugins/xmpp/component_cluster.py,
docs/cluster.md "Components"): connected to node A, it gets the messages, IQs and directed
presence of an XMPP user on node B and the HTTP API posts made on node B, and its answers reach
that user; connecting again through node B ends the stream on node A (conflict) and node B holds
it; once it is gone everywhere a message to it bounces."""
from __future__ import annotations

from convergence.testing import free_port

from ..xmpp.roster_client import iq
from ..xmpp.test_component import ECHO, GATEWAY, SECRET, gateway
from .helpers import api_send

ACCOUNTS = {"alice": "pw-a", "bob": "pw-b"}


def with_component(node, name: str, accounts=None):
    port = free_port()
    server = node(name, accounts, xmpp={"component_listen": f"127.0.0.1:{port}",
                                        "components": {GATEWAY: SECRET}})
    server.component_port = port
    return server


def test_a_component_on_one_node_serves_every_node(node, xmpp_client, client_loop):
    a = with_component(node, "node-a", ACCOUNTS)
    b = with_component(node, "node-b")
    b.passwords.update(ACCOUNTS)
    gw = gateway(client_loop, a)
    alice = xmpp_client(b, "alice")
    a.process.wait_for(f"registered {alice.jid} ")  # node A knows alice's session on node B

    # a message from node B is handed over to node A, which writes it to the component
    alice.send_message(ECHO, "from node B")
    got = gw.next("message", match=lambda m: m["body"] == "from node B")
    assert got["from"].full == alice.jid
    gw.send_message(alice.jid, "back to node B", **{"from": ECHO})
    alice.next("message", timeout=10, match=lambda m: m["body"] == "back to node B")
    # an IQ both ways: alice pings the component; the result crosses back to her node
    assert iq(alice, "<ping xmlns='urn:xmpp:ping'/>", to=GATEWAY)["type"] == "result"
    # directed presence from node B
    alice.call(lambda: alice.xmpp.send_presence(pto=GATEWAY, pstatus="hi from B"))
    assert gw.next("presence", match=lambda p: p["status"] == "hi from B")["from"].full == alice.jid
    # the HTTP API of node B: confirmed by node A
    assert api_send(b, "bob", "pw-b", ECHO, "over http on B")["outcome"] == "delivered"
    gw.next("message", match=lambda m: m["body"] == "over http on B")

    # the component connects again, through node B: node A's stream ends (conflict)
    again = gateway(client_loop, b)
    a.process.wait_for(f"{GATEWAY} connected to another node; the stream here ends (conflict)")
    assert gw.next("disconnected")
    alice.send_message(ECHO, "to the new stream")
    again.next("message", match=lambda m: m["body"] == "to the new stream")
    bob_on_a = xmpp_client(a, "bob", resource="on-a")  # and from node A, now without it
    bob_on_a.send_message(ECHO, "from node A")
    again.next("message", timeout=10, match=lambda m: m["body"] == "from node A")

    # gone everywhere: a message bounces
    start = len(b.process.output)
    again.disconnect()
    b.process.wait_for(f"({GATEWAY}) ended", start=start)
    bob_on_a.send_message(ECHO, "nobody there")
    bounce = bob_on_a.next("message_error", timeout=10, match=lambda m: m["from"].full == ECHO)
    assert bounce["error"]["condition"] == "service-unavailable"
