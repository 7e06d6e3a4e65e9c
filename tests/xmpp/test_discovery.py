"""Service discovery (XEP-0030), ping (XEP-0199) and software version (XEP-0092) with slixmpp."""
import pytest
from slixmpp.exceptions import IqError

import convergence


@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"alice": "wonderland", "bob": "builder"})


def disco(client, kind, to):
    plugin = client.xmpp.plugin["xep_0030"]
    if kind == "info":
        return client.call(lambda: plugin.get_info(jid=to, local=False, cached=False))
    return client.call(lambda: plugin.get_items(jid=to, local=False))


@pytest.mark.parametrize("allowed", [False, True], ids=["registration-off", "registration-on"])
def test_server_info_lists_identity_and_features(xmpp_server, xmpp_client, allowed):
    server = xmpp_server({"alice": "wonderland"}, allow_registration=allowed)
    alice = xmpp_client(server, "alice")
    info = disco(alice, "info", "example.org")["disco_info"]
    assert ("server", "im", None, "Convergence") in info["identities"]
    features = set(info["features"])
    assert {"http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
            "urn:xmpp:ping", "jabber:iq:version", "jabber:iq:roster", "vcard-temp",
            "urn:xmpp:carbons:2", "msgoffline"} <= features
    assert ("jabber:iq:register" in features) == allowed  # XEP-0077 §8


def test_server_items_list_the_muc_service(server, xmpp_client):
    alice = xmpp_client(server, "alice")  # XEP-0045 §6.1: the chat service is a server item
    assert disco(alice, "items", "example.org")["disco_items"]["items"] == {
        ("conference.example.org", None, "Chatrooms")}


def test_account_info_and_items(server, xmpp_client):
    alice = xmpp_client(server, "alice")
    info = disco(alice, "info", "bob@example.org")["disco_info"]  # bob is offline: the server answers
    assert sorted((c, t) for c, t, _, _ in info["identities"]) == [("account", "registered"),
                                                                   ("pubsub", "pep")]  # XEP-0163 §1
    assert disco(alice, "items", "bob@example.org")["disco_items"]["items"] == set()


def test_unknown_account_and_node_are_errors(server, xmpp_client):
    alice = xmpp_client(server, "alice")
    with pytest.raises(IqError) as info:
        disco(alice, "info", "nobody@example.org")
    assert info.value.iq["error"]["condition"] == "service-unavailable"  # RFC 6121 §8.5.1
    with pytest.raises(IqError) as info:
        alice.call(lambda: alice.xmpp.plugin["xep_0030"].get_info(
            jid="example.org", node="nonexistent", local=False, cached=False))
    assert info.value.iq["error"]["condition"] == "item-not-found"  # XEP-0030 §3.2


def test_ping_and_version_of_the_server(server, xmpp_client):
    alice = xmpp_client(server, "alice")
    rtt = alice.call(lambda: alice.xmpp.plugin["xep_0199"].ping("example.org", timeout=5))
    assert rtt >= 0
    version = alice.call(lambda: alice.xmpp.plugin["xep_0092"].get_version("example.org"))
    assert (version["software_version"]["name"], version["software_version"]["version"]) == (
        "Convergence", convergence.__version__)
    assert not version["software_version"]["os"]  # not disclosed
