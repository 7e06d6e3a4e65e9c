"""PEP (XEP-0163) across domains with a real Prosody (its ``mod_pep``), both ways. Each server
learns the other's users' interests the XEP-0115 way: the caps in the presence that crosses, and
a disco#info query that crosses to the client's full JID, answered back over federation."""
import pytest

from convergence.testing import free_port

from ..xmpp.pep_client import event_node, items_of, pep_client, publish_xml
from ..xmpp.roster_client import iq
from .prosody import OURS, PROSODY, Prosody

pytestmark = pytest.mark.skipif(PROSODY is None, reason="prosody is not installed (.ci/run installs it)")

TUNE = "http://jabber.org/protocol/tune"


def test_pep_events_cross_both_ways(federated, tmp_path, xmpp_client):
    port = free_port()
    prosody = Prosody(tmp_path / "prosody", accounts={"bob": "bob-secret"}, peers={OURS: port},
                      modules=("pep",))
    try:
        ours = federated(OURS, {"alice": "alice-secret"}, {prosody.domain: prosody.s2s_address},
                         xmpp={"s2s_listen": f"127.0.0.1:{port}"})
        alice = pep_client(xmpp_client, ours, "alice", notify=[TUNE])
        iq(alice, publish_xml(TUNE, tune("Before"), item_id="a1"), "set")
        alice.next("pubsub_publish")  # her own notification
        bob = pep_client(xmpp_client, prosody, "bob", notify=[TUNE])
        # subscriptions both ways (slixmpp approves and subscribes back by default)
        alice.call(lambda: alice.xmpp.send_presence(pto=prosody.jid("bob"), ptype="subscribe"))
        alice.next("presence", timeout=15, match=lambda p: str(p["from"]) == bob.jid and p["type"] == "available")
        bob.next("presence", timeout=15, match=lambda p: str(p["from"]) == alice.jid and p["type"] == "available")

        # once our server knows bob's interests (his caps, asked over s2s): alice's last item
        assert tune_of(bob.next("pubsub_publish", timeout=15, match=from_(ours.jid("alice"))),
                       ours.jid("alice")) == ("a1", "Before")
        # Prosody's user publishes: our user hears of it
        iq(bob, publish_xml(TUNE, tune("Across"), item_id="b1"), "set")
        assert tune_of(alice.next("pubsub_publish", timeout=15, match=from_(prosody.jid("bob"))),
                       prosody.jid("bob")) == ("b1", "Across")
        # ours publishes: Prosody's user hears of it
        iq(alice, publish_xml(TUNE, tune("Back"), item_id="a2"), "set")
        assert tune_of(bob.next("pubsub_publish", timeout=15, match=from_(ours.jid("alice"))),
                       ours.jid("alice")) == ("a2", "Back")
    finally:
        prosody.stop()


def tune(title: str) -> str:
    return f"<tune xmlns='{TUNE}'><title>{title}</title></tune>"


def from_(owner: str):
    return lambda event: str(event["from"]) == owner


def tune_of(event, owner: str) -> tuple[str, str]:
    """(item id, title) of a tune event from ``owner``."""
    assert str(event["from"]) == owner and event_node(event) == TUNE
    [(item_id, payload)] = items_of(event)
    return item_id, payload.findtext(f"{{{TUNE}}}title")
