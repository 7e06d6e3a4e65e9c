"""The XMPP Interop Testing (sinttest) RFC 6121 cases, replayed with slixmpp.

One test per sinttest case, named after its class and method (smack-sint-server-extensions,
``rfc6121.section2``, ``subscription``). The server runs without the shared roster, as a plain
RFC 6121 server: with it, every local account is already a ``both`` contact.
"""
import xml.etree.ElementTree as ET

import pytest

from .roster_client import (manual, next_presence, next_push, roster_get, roster_remove,
                            roster_set, send_presence)

TARGET = "test-target-x1y2z@example.org"  # sinttest adds items for JIDs that have no account


@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"one": "pw-1", "two": "pw-2"}, shared_roster=False)


# -- RFC6121Section2_5_DeleteIntegrationTest (§2.5.2) --
def test_RFC6121Section2_5_Delete_testRosterDeleteResult(server, xmpp_client):
    one = xmpp_client(server, "one", roster=True)
    roster_set(one, TARGET, "Test User", ["Test Group"])
    assert roster_remove(one, TARGET)["type"] == "result"


@pytest.mark.parametrize("presence", [True, False],
                         ids=["SelfWithInitialPresence", "SelfWithoutInitialPresence"])
def test_RFC6121Section2_5_Delete_testRosterDeleteGeneratesPushToInterestedResource(
        server, xmpp_client, presence):
    one = xmpp_client(server, "one", roster=True, presence=presence)
    roster_set(one, TARGET, "Test User", ["Test Group"])
    next_push(one, TARGET, "none")
    roster_remove(one, TARGET)
    next_push(one, TARGET, "remove")
    assert TARGET not in roster_get(one)[0]


def test_RFC6121Section2_5_Delete_testRosterDeleteGeneratesPushToInterestedResourceOtherResourceWithInitialPresence(
        server, xmpp_client):
    primary = xmpp_client(server, "one", roster=True)
    secondary = xmpp_client(server, "one", resource="secondary", roster=True)
    roster_set(primary, TARGET, "Test User", ["Test Group"])
    next_push(secondary, TARGET, "none")
    roster_remove(primary, TARGET)
    next_push(secondary, TARGET, "remove")
    assert TARGET not in roster_get(secondary)[0]


# -- RFC6121Section2_6a/b/c: roster versioning (§2.6) --
def test_RFC6121Section2_6a_VerStreamFeature(server, xmpp_client):
    one = xmpp_client(server, "one")
    assert "rosterver" in one.xmpp.features  # <ver xmlns='urn:xmpp:features:rosterver'/> offered


def test_RFC6121Section2_6b_VerRequest(server, xmpp_client):
    one = xmpp_client(server, "one")
    items, ver = roster_get(one, ver="")  # a client that supports versioning gets a ver back
    assert ver is not None


def test_RFC6121Section2_6c_VerSuccess(server, xmpp_client):
    one = xmpp_client(server, "one", roster=True)
    roster_set(one, TARGET, "Test User")
    _, ver = roster_get(one, ver="")
    assert roster_get(one, ver=ver) is None  # unchanged: an empty result (§2.6.3)


# -- subscription.SubscriptionIntegrationTest / LowLevelSubscriptionIntegrationTest (§3.1.3) --
def _subscribe(client, to, extension=False):
    def send():
        stanza = client.xmpp.make_presence(pto=to, ptype="subscribe")
        if extension:
            stanza.xml.append(ET.fromstring("<test xmlns='org.example.test'/>"))
        stanza.send()
    client.call(send)


def test_SubscriptionIntegrationTest_testSubscriptionRequest(server, xmpp_client):
    one = manual(xmpp_client, server, "one")
    two = manual(xmpp_client, server, "two")
    _subscribe(two, one.jid)  # sent to the full JID: handled for the bare one
    next_presence(one, "two@example.org", "subscribe")


def test_SubscriptionIntegrationTest_testSubscriptionRequestWithExtension(server, xmpp_client):
    one = manual(xmpp_client, server, "one")
    two = manual(xmpp_client, server, "two")
    _subscribe(two, one.jid, extension=True)
    request = next_presence(one, "two@example.org", "subscribe")
    assert request.xml.find("{org.example.test}test") is not None


@pytest.mark.parametrize("extension", [False, True], ids=["", "WithExtension"])
def test_LowLevelSubscriptionIntegrationTest_testSubscriptionRequestOffline(server, xmpp_client,
                                                                           extension):
    two = manual(xmpp_client, server, "two")
    _subscribe(two, "one@example.org", extension)  # one is offline
    next_push(two, "one@example.org")
    one = manual(xmpp_client, server, "one", roster=False)
    request = next_presence(one, "two@example.org", "subscribe")
    assert (request.xml.find("{org.example.test}test") is not None) == extension


# -- RFC6121Section8_5_2_1_2_PresenceIntegrationTest: presence to a bare JID (§8.5.2.1.2) --
def test_RFC6121Section8_5_2_1_2_Presence_deliveredToAllAvailableResources(server, xmpp_client):
    desk = xmpp_client(server, "one", resource="desk")
    phone = xmpp_client(server, "one", resource="phone")
    two = xmpp_client(server, "two")
    send_presence(two, "one@example.org")  # directed available presence to the bare JID
    for resource in (desk, phone):
        next_presence(resource, two.jid)
