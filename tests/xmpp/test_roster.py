"""Roster management (RFC 6121 §2) and the shared roster, with real slixmpp clients."""
import pytest
from slixmpp.exceptions import IqError

from .roster_client import (available_from, befriend, condition, groups, iq, manual, next_presence, next_push,
                            roster_get, roster_remove, roster_set, send_presence)

PEOPLE = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"}


@pytest.fixture
def private(xmpp_server):
    """A server without the shared roster: rosters hold only what users put there."""
    return xmpp_server(PEOPLE, shared_roster=False)


def test_add_update_remove_with_pushes_to_two_resources(private, xmpp_client):
    phone = xmpp_client(private, "alice", resource="phone", roster=True)
    desk = xmpp_client(private, "alice", resource="desk", roster=True)
    romeo = "romeo@example.net"

    roster_set(phone, romeo, "Romeo", ["Friends", "Verona"])  # §2.3: add
    for resource in (phone, desk):
        item = next_push(resource, romeo)
        assert (item.get("name"), item.get("subscription"), groups(item)) == \
            ("Romeo", "none", ["Friends", "Verona"])

    roster_set(phone, romeo, "R.", ["Verona"])  # §2.4: update replaces name and groups
    assert groups(next_push(desk, romeo)) == ["Verona"]
    items, _ = roster_get(desk)
    assert (items[romeo].get("name"), groups(items[romeo])) == ("R.", ["Verona"])

    roster_remove(desk, romeo)  # §2.5
    for resource in (phone, desk):
        next_push(resource, romeo, "remove")
    assert romeo not in roster_get(phone)[0]


def test_a_resource_that_never_asked_for_the_roster_gets_no_push(private, xmpp_client):
    interested = xmpp_client(private, "alice", resource="a", roster=True)
    other = xmpp_client(private, "alice", resource="b", roster=False)
    roster_set(interested, "nurse@example.org", "Nurse")
    next_push(interested, "nurse@example.org")
    other.none("roster_update", 0.3)


def test_roster_persists_across_sessions(private, xmpp_client):
    first = xmpp_client(private, "alice", roster=True)
    roster_set(first, "bob@example.org", "Bob", ["Work"])
    first.disconnect()
    again = xmpp_client(private, "alice", resource="again")
    item = roster_get(again)[0]["bob@example.org"]
    assert (item.get("name"), groups(item)) == ("Bob", ["Work"])


@pytest.mark.parametrize("payload, expected", [
    ("<item jid='a@example.org'/><item jid='b@example.org'/>", "bad-request"),  # §2.3.3
    ("<item jid='a@example.org'><group/></item>", "not-acceptable"),
    ("<item jid='a@example.org'><group>G</group><group>G</group></item>", "bad-request"),
    (f"<item jid='a@example.org' name='{'n' * 1024}'/>", "not-acceptable"),
    ("<item jid='a@@example.org'/>", "jid-malformed"),
    ("<item jid='nobody@example.org' subscription='remove'/>", "item-not-found"),  # §2.5.3
])
def test_invalid_roster_sets_are_refused(private, xmpp_client, payload, expected):
    alice = xmpp_client(private, "alice", roster=True)
    with pytest.raises(IqError) as exc:
        iq(alice, f"<query xmlns='jabber:iq:roster'>{payload}</query>", "set")
    assert condition(exc.value) == expected
    assert roster_get(alice)[0] == {}


def test_subscription_attributes_in_a_set_are_ignored(private, xmpp_client):
    alice = xmpp_client(private, "alice", roster=True)
    roster_set(alice, "bob@example.org", "Bob", subscription="both", ask="subscribe")
    item = next_push(alice, "bob@example.org")
    assert (item.get("subscription"), item.get("ask")) == ("none", None)


def test_roster_versioning(private, xmpp_client):
    alice = xmpp_client(private, "alice", roster=True)
    items, ver = roster_get(alice, ver="")  # §2.6.2: "" asks for everything, with a version
    assert items == {} and ver
    assert roster_get(alice, ver=ver) is None  # §2.6.3: unchanged → empty result
    roster_set(alice, "bob@example.org", "Bob")
    push = next_push(alice, "bob@example.org")
    newer = roster_get(alice, ver=ver)  # stale version → the roster at the new version
    assert newer is not None and newer[1] != ver and "bob@example.org" in newer[0]
    assert push is not None and roster_get(alice, ver=newer[1]) is None


def test_removal_cancels_subscriptions_both_ways(private, xmpp_client):
    alice = manual(xmpp_client, private, "alice")
    bob = manual(xmpp_client, private, "bob")
    befriend(alice, bob)
    roster_remove(alice, "bob@example.org")  # §2.5.2: unsubscribe and unsubscribed to bob
    next_push(alice, "bob@example.org", "remove")
    next_push(bob, "alice@example.org", "none")
    next_presence(bob, "alice@example.org", "unsubscribe")
    next_presence(bob, "alice@example.org", "unsubscribed")
    next_presence(bob, alice.jid, "unavailable")  # bob no longer sees alice


# -- the shared roster --
def test_shared_roster_lists_accounts_and_echo_with_live_presence(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    bob = xmpp_client(server, "bob", roster=True)
    alice = xmpp_client(server, "alice", roster=True)
    items, _ = roster_get(alice)
    assert set(items) == {"bob@example.org", "carol@example.org", "echo@example.org",
                          "httpuser@example.org"}  # the HTTP user ([http] user) too
    for item in items.values():
        assert (item.get("subscription"), groups(item)) == ("both", ["Friends"])
    available_from(alice, "echo@example.org", bob.jid)  # echo is always available, bob is online
    next_presence(bob, alice.jid)  # and sees alice come online


def test_shared_contact_can_be_renamed_but_not_removed(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    alice = xmpp_client(server, "alice", roster=True)
    roster_set(alice, "bob@example.org", "Bobby", ["Work"])
    item = next_push(alice, "bob@example.org")
    assert (item.get("name"), item.get("subscription"), groups(item)) == ("Bobby", "both", ["Work"])
    with pytest.raises(IqError) as exc:
        roster_remove(alice, "bob@example.org")
    assert condition(exc.value) == "not-allowed"
    assert roster_get(alice)[0]["bob@example.org"].get("name") == "Bobby"


def test_shared_roster_subscribe_is_answered_at_once(xmpp_server, xmpp_client):
    server = xmpp_server(PEOPLE)
    alice = manual(xmpp_client, server, "alice")
    send_presence(alice, "bob@example.org", "subscribe")
    next_presence(alice, "bob@example.org", "subscribed")


def test_shared_roster_off_shows_only_own_items(private, xmpp_client):
    alice = xmpp_client(private, "alice", roster=True)
    assert roster_get(alice)[0] == {}
