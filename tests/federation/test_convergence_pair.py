"""Two Convergence servers federating with each other over real sockets on loopback (issue 13):
each finds the other through ``[xmpp] s2s_hosts``, streams use STARTTLS and dialback (XEP-0220)
with the servers' self-signed certificates."""
import base64
import json
import urllib.request

import pytest

from convergence.testing import free_port

from .talk import says

A, B = "a.example", "b.example"


@pytest.fixture
def pair(federated):
    pa, pb = free_port(), free_port()
    a = federated(A, {"alice": "secret-a"}, {B: f"127.0.0.1:{pb}"}, xmpp={"s2s_listen": f"127.0.0.1:{pa}"})
    b = federated(B, {"bob": "secret-b"}, {A: f"127.0.0.1:{pa}"}, xmpp={"s2s_listen": f"127.0.0.1:{pb}"})
    return a, b


def test_messages_both_ways(pair, xmpp_client):
    a, b = pair
    alice, bob = xmpp_client(a, "alice"), xmpp_client(b, "bob")
    says(alice, bob, "hello from a")
    says(bob, alice, "hello back", to=alice.jid)
    a.process.wait_for("authenticated by dialback")
    b.process.wait_for("authenticated by dialback")


def test_s2s_streams_are_in_the_metrics(pair, xmpp_client):
    """``convergence_xmpp_s2s_streams`` by direction (docs/operations.md, Metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    def streams(server) -> dict:
        with urllib.request.urlopen(server.http_url + "/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return {s.labels["direction"]: s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == "convergence_xmpp_s2s_streams"}

    a, b = pair
    assert streams(a) == {"in": 0, "out": 0}
    alice, bob = xmpp_client(a, "alice"), xmpp_client(b, "bob")
    says(alice, bob, "counted")
    a.process.wait_for("authenticated to b.example by dialback")
    b.process.wait_for("a.example authenticated by dialback")
    assert streams(a)["out"] == 1 and streams(b)["in"] == 1


def test_unknown_remote_user_is_an_error(pair, xmpp_client):
    a, b = pair
    alice = xmpp_client(a, "alice")
    alice.send_message(b.jid("nobody"), "anyone?")
    error = alice.next("message_error", timeout=10)
    assert error["error"]["condition"] == "service-unavailable"


def test_offline_remote_user_gets_it_at_login(pair, xmpp_client):
    a, b = pair
    alice = xmpp_client(a, "alice")
    alice.send_message(b.jid("bob"), "while you were out")
    b.process.wait_for("authenticated by dialback", timeout=10)
    bob = xmpp_client(b, "bob")
    got = bob.next("message", timeout=10)
    assert (str(got["from"]), got["body"]) == (alice.jid, "while you were out")


def test_http_api_sends_to_a_remote_user(pair, xmpp_client):
    """POST /api/messages to another domain's JID goes out over federation (no HTTP code knows)."""
    a, b = pair
    bob = xmpp_client(b, "bob")
    request = urllib.request.Request(
        f"{a.http_url}/api/messages", data=json.dumps({"to": b.jid("bob"), "body": "via http"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Basic " + base64.b64encode(
            b"alice:secret-a").decode()}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["outcome"] == "delivered"
    got = bob.next("message", timeout=10)
    assert (got["from"].bare, got["body"]) == (a.jid("alice"), "via http")


def test_no_relay_for_other_domains():
    """A peer may only send for its own domain to ours; our route carries only our users."""
    from convergence import Address, Message, RoutingError
    from convergence.plugins.xmpp.s2s_routing import RemoteDomainRoute
    route = RemoteDomainRoute(None, type("F", (), {"domain": A})(), B)
    with pytest.raises(RoutingError) as refused:
        route.deliver(Message(Address.from_jid("x@c.example"), Address.from_jid(f"bob@{B}"), "relay?"))
    assert refused.value.condition == "forbidden"


def test_presence_subscription_between_two_convergence_servers(pair, xmpp_client):
    """RFC 6121 across our own servers: alice subscribes to bob (slixmpp approves and subscribes
    back), both rosters say both, each sees the other online, and a logout is seen."""
    a, b = pair
    alice, bob = xmpp_client(a, "alice", roster=True), xmpp_client(b, "bob", roster=True)
    alice.call(lambda: alice.xmpp.send_presence(pto=b.jid("bob"), ptype="subscribe"))
    alice.next("presence", timeout=15, match=lambda p: str(p["from"]) == bob.jid and p["type"] == "available")
    bob.next("presence", timeout=15, match=lambda p: str(p["from"]) == alice.jid and p["type"] == "available")
    for client, contact in ((alice, b.jid("bob")), (bob, a.jid("alice"))):
        roster = client.call(lambda: client.xmpp.client_roster)
        assert roster[contact]["subscription"] == "both"
    bob.disconnect()
    alice.next("presence", timeout=15, match=lambda p: str(p["from"]) == bob.jid and p["type"] == "unavailable")
