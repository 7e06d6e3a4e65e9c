"""vcard-temp (XEP-0054) with real slixmpp clients."""
import pytest
from slixmpp.exceptions import IqError

from .roster_client import condition, iq

VCARD = "<vCard xmlns='vcard-temp'><FN>{}</FN><NICKNAME>{}</NICKNAME></vCard>"


def card(result):
    element = result.xml.find("{vcard-temp}vCard")
    return element.findtext("{vcard-temp}FN"), element.findtext("{vcard-temp}NICKNAME")


def test_set_get_and_read_by_a_contact(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = xmpp_client(server, "alice")
    bob = xmpp_client(server, "bob")
    assert card(iq(alice, "<vCard xmlns='vcard-temp'/>")) == (None, None)  # none yet: empty
    iq(alice, VCARD.format("Alice Liddell", "alice"), "set")  # §3.2
    assert card(iq(alice, "<vCard xmlns='vcard-temp'/>")) == ("Alice Liddell", "alice")
    iq(alice, VCARD.format("Alice L.", "al"), "set")  # replaced, not merged
    assert card(iq(bob, "<vCard xmlns='vcard-temp'/>", to="alice@example.org")) == ("Alice L.", "al")
    alice.none("iq", 0.3)  # §3.3: the server answered, alice's client never saw the request


def test_errors(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = xmpp_client(server, "alice")
    with pytest.raises(IqError) as exc:  # §3.2: not someone else's
        iq(alice, VCARD.format("Bob", "bob"), "set", to="bob@example.org")
    assert condition(exc.value) == "forbidden"
    conditions = set()
    for who in ("bob@example.org", "nobody@example.org"):  # no vCard / no account: same error
        with pytest.raises(IqError) as exc:
            iq(alice, "<vCard xmlns='vcard-temp'/>", to=who)
        conditions.add(condition(exc.value))
    assert conditions == {"item-not-found"}
