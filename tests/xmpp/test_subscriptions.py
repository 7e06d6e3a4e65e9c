"""Presence subscriptions (RFC 6121 §3): the Appendix A tables row by row (sans-IO), then the
handshake between real slixmpp clients."""
import xml.etree.ElementTree as ET

import pytest

from convergence.plugins.xmpp.subscriptions import State, inbound, outbound

from .roster_client import (bare, befriend, drain, manual, next_presence, next_push, roster_get,
                            roster_set, send_presence)

# Appendix A, written out again here (not imported) so that the tables are checked, not copied.
N, NO, NI, NOI = "None", "None + Pending Out", "None + Pending In", "None + Pending Out + Pending In"
T, TI, F, FO, B = "To", "To + Pending In", "From", "From + Pending Out", "Both"

OUTBOUND_ROWS = [  # (stanza, existing state, new state) — A.2.1 to A.2.4
    ("subscribe", N, NO), ("subscribe", NO, NO), ("subscribe", NI, NOI), ("subscribe", NOI, NOI),
    ("subscribe", T, T), ("subscribe", TI, TI), ("subscribe", F, FO), ("subscribe", FO, FO),
    ("subscribe", B, B),
    ("unsubscribe", N, N), ("unsubscribe", NO, N), ("unsubscribe", NI, NI), ("unsubscribe", NOI, NI),
    ("unsubscribe", T, N), ("unsubscribe", TI, NI), ("unsubscribe", F, F), ("unsubscribe", FO, F),
    ("unsubscribe", B, F),
    ("subscribed", N, N), ("subscribed", NO, NO), ("subscribed", NI, F), ("subscribed", NOI, FO),
    ("subscribed", T, T), ("subscribed", TI, B), ("subscribed", F, F), ("subscribed", FO, FO),
    ("subscribed", B, B),
    ("unsubscribed", N, N), ("unsubscribed", NO, NO), ("unsubscribed", NI, N),
    ("unsubscribed", NOI, NO), ("unsubscribed", T, T), ("unsubscribed", TI, T),
    ("unsubscribed", F, N), ("unsubscribed", FO, NO), ("unsubscribed", B, T),
]

INBOUND_ROWS = [  # (stanza, existing state, delivered?, new state) — A.3.1 to A.3.4
    ("subscribe", N, True, NI), ("subscribe", NO, True, NOI), ("subscribe", NI, False, NI),
    ("subscribe", NOI, False, NOI), ("subscribe", T, True, TI), ("subscribe", TI, False, TI),
    ("subscribe", F, False, F), ("subscribe", FO, False, FO), ("subscribe", B, False, B),
    ("unsubscribe", N, False, N), ("unsubscribe", NO, False, NO), ("unsubscribe", NI, True, N),
    ("unsubscribe", NOI, True, NO), ("unsubscribe", T, False, T), ("unsubscribe", TI, True, T),
    ("unsubscribe", F, True, N), ("unsubscribe", FO, True, NO), ("unsubscribe", B, True, T),
    ("subscribed", N, False, N), ("subscribed", NO, True, T), ("subscribed", NI, False, NI),
    ("subscribed", NOI, True, TI), ("subscribed", T, False, T), ("subscribed", TI, False, TI),
    ("subscribed", F, False, F), ("subscribed", FO, True, B), ("subscribed", B, False, B),
    ("unsubscribed", N, False, N), ("unsubscribed", NO, True, N), ("unsubscribed", NI, False, NI),
    ("unsubscribed", NOI, True, NI), ("unsubscribed", T, True, N), ("unsubscribed", TI, True, NI),
    ("unsubscribed", F, False, F), ("unsubscribed", FO, True, F), ("unsubscribed", B, True, F),
]


@pytest.mark.parametrize("kind, old, new", OUTBOUND_ROWS)
def test_appendix_a2_outbound(kind, old, new):
    outcome = outbound(kind, State.named(old))
    assert outcome.new.name == new
    # subscribe/unsubscribe always go to the contact; subscribed/unsubscribed only when they act
    assert outcome.forward == (kind in ("subscribe", "unsubscribe") or old != new)


@pytest.mark.parametrize("kind, old, delivered, new", INBOUND_ROWS)
def test_appendix_a3_inbound(kind, old, delivered, new):
    outcome = inbound(kind, State.named(old))
    assert (outcome.forward, outcome.new.name) == (delivered, new)
    # §3.1.3: a subscribe from a contact that already sees us is answered by the server
    assert outcome.reply == ("subscribed" if kind == "subscribe" and old in (F, FO, B) else None)


@pytest.mark.parametrize("old, new", [(N, F), (NO, FO), (T, B)])
def test_pre_approval(old, new):
    """§3.4: "subscribed" with no request pending is kept, not sent; the request then is approved
    by the server without reaching the user, and the pre-approval is used up."""
    noted = outbound("subscribed", State.named(old))
    assert (noted.forward, noted.new.approved, noted.new.name, noted.push) == (False, True, old, True)
    answered = inbound("subscribe", noted.new)
    assert (answered.forward, answered.reply, answered.new.name, answered.new.approved) == \
        (False, "subscribed", new, False)


def test_unsubscribed_cancels_a_pre_approval():
    cancelled = outbound("unsubscribed", State.named(N, approved=True))
    assert (cancelled.forward, cancelled.new, cancelled.push) == (False, State.named(N), True)


def test_pending_in_is_not_a_visible_roster_change():
    assert not inbound("subscribe", State.named(N)).push  # §3.1.3: no roster push for a request
    assert outbound("subscribe", State.named(N)).push  # ask="subscribe" is pushed (§3.1.2)


def test_not_a_subscription_stanza():
    with pytest.raises(ValueError):
        outbound("probe", State())


# -- between real clients (shared roster off: subscriptions are the users' own) --
@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"alice": "pw-a", "bob": "pw-b"}, shared_roster=False)


def test_handshake(server, xmpp_client):
    """§3.1: alice asks, bob sees the request and approves; both rosters follow with pushes."""
    alice = manual(xmpp_client, server, "alice")
    bob = manual(xmpp_client, server, "bob")
    send_presence(alice, "bob@example.org", "subscribe")
    assert next_push(alice, "bob@example.org").get("ask") == "subscribe"  # §3.1.2
    request = next_presence(bob, "alice@example.org", "subscribe")
    assert str(request["from"]) == "alice@example.org"  # stamped with the bare JID
    send_presence(bob, "alice@example.org", "subscribed")
    assert next_push(bob, "alice@example.org").get("subscription") == "from"  # §3.1.5
    item = next_push(alice, "bob@example.org", "to")
    assert item.get("ask") is None
    next_presence(alice, "bob@example.org", "subscribed")
    next_presence(alice, bob.jid)  # §3.1.5: bob's current presence follows the approval
    items, _ = roster_get(alice)
    assert items["bob@example.org"].get("subscription") == "to"


def test_refusal(server, xmpp_client):
    alice = manual(xmpp_client, server, "alice")
    bob = manual(xmpp_client, server, "bob")
    send_presence(alice, "bob@example.org", "subscribe")
    next_presence(bob, "alice@example.org", "subscribe")
    send_presence(bob, "alice@example.org", "unsubscribed")  # §3.2.1: deny
    next_presence(alice, "bob@example.org", "unsubscribed")
    item = roster_get(alice)[0]["bob@example.org"]  # pushed before the stanza was delivered
    assert (item.get("subscription"), item.get("ask")) == ("none", None)


def test_pre_approval_between_clients(server, xmpp_client):
    """§3.4: bob approves before alice asks; her request is answered without reaching bob."""
    alice = manual(xmpp_client, server, "alice")
    bob = manual(xmpp_client, server, "bob")
    send_presence(bob, "alice@example.org", "subscribed")
    assert next_push(bob, "alice@example.org").get("approved") == "true"
    assert not [p for p in drain(alice, "presence", 0.3) if p.xml.get("type")]  # kept by bob's server
    send_presence(alice, "bob@example.org", "subscribe")
    next_presence(alice, "bob@example.org", "subscribed")
    next_push(alice, "bob@example.org", "to")
    item = next_push(bob, "alice@example.org", "from")
    assert item.get("approved") is None


def test_request_to_an_offline_contact_is_delivered_at_login(server, xmpp_client):
    """§3.1.3: kept with its extension content while bob is offline, delivered at his initial
    presence, and again at the next one until he answers."""
    alice = manual(xmpp_client, server, "alice")

    def subscribe_with_extension():
        stanza = alice.xmpp.make_presence(pto="bob@example.org", ptype="subscribe")
        stanza.xml.append(ET.fromstring("<test xmlns='org.example.test'/>"))
        stanza.send()
    alice.call(subscribe_with_extension)
    next_push(alice, "bob@example.org")
    for resource in ("first", "second"):
        bob = manual(xmpp_client, server, "bob", roster=False, resource=resource)
        request = next_presence(bob, "alice@example.org", "subscribe")
        assert request.xml.find("{org.example.test}test") is not None
        bob.disconnect()
    bob = manual(xmpp_client, server, "bob", resource="third")
    next_presence(bob, "alice@example.org", "subscribe")
    send_presence(bob, "alice@example.org", "subscribed")
    next_push(alice, "bob@example.org", "to")
    bob.disconnect()
    bob = manual(xmpp_client, server, "bob", roster=False, resource="fourth")
    assert all(p.xml.get("type") != "subscribe" for p in drain(bob, "presence", 0.3))



def test_unsubscribe_stops_presence(server, xmpp_client):
    alice = manual(xmpp_client, server, "alice")
    bob = manual(xmpp_client, server, "bob")
    befriend(alice, bob)
    send_presence(alice, "bob@example.org", "unsubscribe")  # §3.3
    next_push(alice, "bob@example.org", "from")
    next_push(bob, "alice@example.org", "to")
    next_presence(alice, bob.jid, "unavailable")  # §3.3.3: bob's resources go away for alice
    send_presence(bob, None, None, status="busy")
    assert not [p for p in drain(alice, "presence", 0.3) if p["from"].bare == bare(bob)]

