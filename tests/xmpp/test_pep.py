"""PEP (XEP-0163 on XEP-0060) with stock slixmpp clients over STARTTLS: publish, +notify through
entity capabilities (XEP-0115), last items on presence, access models, publish-options, limits."""
import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0172 import UserNick

from .pep_client import (EVENT, PUBSUB, app_condition, event_node, items_of, items_xml, pep_client,
                         publish_xml, result_items)
from .roster_client import condition, iq, send_presence

TUNE = "http://jabber.org/protocol/tune"
NICK = "http://jabber.org/protocol/nick"
GEOLOC = "http://jabber.org/protocol/geoloc"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"


def tune(title: str) -> str:
    return f"<tune xmlns='{TUNE}'><title>{title}</title></tune>"


def test_publish_notifies_contacts_that_asked_through_caps(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"})
    alice = pep_client(xmpp_client, server, "alice", notify=[TUNE])
    bob = pep_client(xmpp_client, server, "bob", notify=[TUNE, NICK])
    carol = pep_client(xmpp_client, server, "carol", notify=[NICK])  # no tune+notify
    result = iq(alice, publish_xml(TUNE, tune("Yesterday"), item_id="t1"), "set")
    assert result.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item").get("id") == "t1"
    for client in (alice, bob):  # the owner's own sessions and the contact with +notify
        event = client.next("pubsub_publish")
        assert str(event["from"]) == "alice@example.org" and event["type"] == "headline"
        assert event_node(event) == TUNE
        [(item_id, payload)] = items_of(event)
        assert item_id == "t1" and payload.findtext(f"{{{TUNE}}}title") == "Yesterday"
    carol.none("pubsub_publish", 0.3)
    # the nick via slixmpp's XEP-0172 plugin, which announces nick+notify for every client
    nick = UserNick()
    nick["nick"] = "Bobby"
    bob.call(lambda: bob.xmpp.plugin["xep_0163"].publish(nick, node=NICK))
    for client in (alice, bob, carol):
        [(_, payload)] = items_of(client.next("pubsub_publish"))
        assert payload.tag == f"{{{NICK}}}nick" and payload.text == "Bobby"


def test_last_item_on_presence_and_items_queries(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = pep_client(xmpp_client, server, "alice")
    for n in range(1, 5):  # max_items=3 keeps the newest three
        iq(alice, publish_xml(GEOLOC, f"<geoloc xmlns='{GEOLOC}'><locality>c{n}</locality></geoloc>",
                              item_id=f"g{n}", max_items="3"), "set")
    bob = pep_client(xmpp_client, server, "bob", notify=[GEOLOC])  # comes online afterwards
    event = bob.next("pubsub_publish")  # XEP-0163 §6.1.2: the last published item
    [(item_id, payload)] = items_of(event)
    assert item_id == "g4" and payload.findtext(f"{{{GEOLOC}}}locality") == "c4"
    everything = result_items(iq(bob, items_xml(GEOLOC), to="alice@example.org"))
    assert [i for i, _ in everything] == ["g2", "g3", "g4"]
    assert [i for i, _ in result_items(iq(bob, items_xml(GEOLOC, max_items=1), to="alice@example.org"))] == ["g4"]
    assert [i for i, _ in result_items(iq(bob, items_xml(GEOLOC, "g3"), to="alice@example.org"))] == ["g3"]
    # republishing an id moves it to the end; retract notifies (notify_retract)
    iq(alice, publish_xml(GEOLOC, f"<geoloc xmlns='{GEOLOC}'/>", item_id="g2"), "set")
    assert bob.next("pubsub_publish") is not None
    assert [i for i, _ in result_items(iq(alice, items_xml(GEOLOC)))] == ["g3", "g4", "g2"]
    alice.call(lambda: alice.xmpp.plugin["xep_0060"].retract("alice@example.org", GEOLOC, "g3"))
    retract = bob.next("pubsub_retract")
    assert retract.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items/{{{EVENT}}}retract").get("id") == "g3"
    with pytest.raises(IqError) as exc:
        iq(alice, f"<pubsub xmlns='{PUBSUB}'><retract node='{GEOLOC}'><item id='g3'/></retract></pubsub>", "set")
    assert condition(exc.value) == "item-not-found"
    # the owner deletes the node: subscribers hear of it, the items are gone
    iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><delete node='{GEOLOC}'/></pubsub>", "set")
    assert event_node(bob.next("pubsub_delete")) == GEOLOC
    with pytest.raises(IqError) as exc:
        iq(bob, items_xml(GEOLOC), to="alice@example.org")
    assert condition(exc.value) == "item-not-found"


def test_access_models(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b", "carol": "pw-c"}, shared_roster=False)
    alice = pep_client(xmpp_client, server, "alice")
    bob = pep_client(xmpp_client, server, "bob", notify=[TUNE, DEVICES])
    iq(alice, publish_xml(TUNE, tune("Help!")), "set")  # presence: bob is not subscribed
    with pytest.raises(IqError) as exc:
        iq(bob, items_xml(TUNE), to="alice@example.org")
    assert (condition(exc.value), app_condition(exc.value)) == ("not-authorized", "presence-subscription-required")
    bob.none("pubsub_publish", 0.3)
    # OMEMO device lists are open by default (XEP-0384): anyone reads them, no subscription needed
    devices = f"<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"
    iq(alice, publish_xml(DEVICES, devices), "set")
    [(item_id, payload)] = result_items(iq(bob, items_xml(DEVICES), to="alice@example.org"))
    assert payload.find("{eu.siacs.conversations.axolotl}device").get("id") == "1234"
    bundle = "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>AAAA" \
             "</signedPreKeyPublic></bundle>"
    iq(alice, publish_xml(f"eu.siacs.conversations.axolotl.bundles:1234", bundle), "set")
    assert len(result_items(iq(bob, items_xml("eu.siacs.conversations.axolotl.bundles:1234"), to="alice@example.org"))) == 1
    for device in ("1", "2"):  # OMEMO 2: one bundle item per device, with the options XEP-0384 asks
        iq(alice, publish_xml("urn:xmpp:omemo:2:bundles", f"<bundle xmlns='urn:xmpp:omemo:2'><spk id='{device}'>AA"
                              "</spk></bundle>", item_id=device, max_items="max", access_model="open"), "set")
    assert [i for i, _ in result_items(iq(bob, items_xml("urn:xmpp:omemo:2:bundles"), to="alice@example.org"))] == ["1", "2"]
    # whitelist: only members read
    iq(alice, publish_xml("urn:example:secret", "<s xmlns='urn:example'/>", access_model="whitelist"), "set")
    with pytest.raises(IqError) as exc:
        iq(bob, items_xml("urn:example:secret"), to="alice@example.org")
    assert (condition(exc.value), app_condition(exc.value)) == ("not-allowed", "closed-node")
    iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><affiliations node='urn:example:secret'>"
              "<affiliation jid='bob@example.org' affiliation='member'/></affiliations></pubsub>", "set")
    assert len(result_items(iq(bob, items_xml("urn:example:secret"), to="alice@example.org"))) == 1
    listing = iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><affiliations node='urn:example:secret'/></pubsub>")
    found = {a.get("jid"): a.get("affiliation") for a in listing.xml.iter(f"{{{PUBSUB}#owner}}affiliation")}
    assert found == {"alice@example.org": "owner", "bob@example.org": "member"}
    # publish-options are preconditions on an existing node (XEP-0060 §7.1.5)
    with pytest.raises(IqError) as exc:
        iq(alice, publish_xml(TUNE, tune("x"), access_model="open"), "set")
    assert (condition(exc.value), app_condition(exc.value)) == ("conflict", "precondition-not-met")
    # reconfigured open, bob reads it; only the owner publishes or configures
    iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'><x xmlns='jabber:x:data' "
              f"type='submit'><field var='FORM_TYPE'><value>{PUBSUB}#node_config</value></field>"
              "<field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub>", "set")
    assert len(result_items(iq(bob, items_xml(TUNE), to="alice@example.org"))) == 1
    for payload in (publish_xml(TUNE, tune("mine")), f"<pubsub xmlns='{PUBSUB}#owner'><delete node='{TUNE}'/></pubsub>"):
        with pytest.raises(IqError) as exc:
            iq(bob, payload, "set", to="alice@example.org")
        assert condition(exc.value) == "forbidden"


def test_account_disco_shows_pep(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a"})
    alice = xmpp_client(server, "alice")
    info = alice.call(lambda: alice.xmpp.plugin["xep_0030"].get_info("alice@example.org"))["disco_info"]
    assert ("pubsub", "pep", None, None) in info["identities"]
    assert {PUBSUB, f"{PUBSUB}#publish", f"{PUBSUB}#publish-options", f"{PUBSUB}#access-whitelist",
            f"{PUBSUB}#auto-create", f"{PUBSUB}#last-published", "urn:xmpp:bookmarks:1#compat",
            "urn:xmpp:pep-vcard-conversion:0"} <= set(info["features"])  # XEP-0398 §2: on the account
    server_info = alice.call(lambda: alice.xmpp.plugin["xep_0030"].get_info("example.org"))["disco_info"]
    assert {"jabber:iq:private", "http://jabber.org/protocol/caps"} <= set(server_info["features"])


def test_limits(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a"}, pep_max_item_size=2048, pep_max_nodes=2, pep_max_items=3)
    alice = pep_client(xmpp_client, server, "alice")
    with pytest.raises(IqError) as exc:
        iq(alice, publish_xml(TUNE, tune("x" * 3000)), "set")
    assert (condition(exc.value), app_condition(exc.value)) == ("not-acceptable", "payload-too-big")
    iq(alice, publish_xml("urn:example:a", "<a xmlns='urn:example'/>"), "set")
    iq(alice, publish_xml("urn:example:b", "<b xmlns='urn:example'/>"), "set")
    with pytest.raises(IqError) as exc:
        iq(alice, publish_xml("urn:example:c", "<c xmlns='urn:example'/>"), "set")
    assert (condition(exc.value), app_condition(exc.value)) == ("not-allowed", "max-nodes-exceeded")
    for n in range(6):  # max_items 'max' is pep_max_items
        iq(alice, publish_xml("urn:example:a", "<a xmlns='urn:example'/>", item_id=f"i{n}", max_items="max"
                              if n == 0 else None) if False else
           publish_xml("urn:example:a", "<a xmlns='urn:example'/>", item_id=f"i{n}"), "set")
    assert len(result_items(iq(alice, items_xml("urn:example:a")))) == 1  # default max_items 1
    iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><configure node='urn:example:a'><x xmlns='jabber:x:data' "
              "type='submit'><field var='pubsub#max_items'><value>max</value></field></x></configure></pubsub>", "set")
    for n in range(6):
        iq(alice, publish_xml("urn:example:a", "<a xmlns='urn:example'/>", item_id=f"j{n}"), "set")
    assert [i for i, _ in result_items(iq(alice, items_xml("urn:example:a")))] == ["j3", "j4", "j5"]


BAD = [
    (f"<pubsub xmlns='{PUBSUB}'><publish><item><x xmlns='urn:x'/></item></publish></pubsub>", "set",
     ("bad-request", "nodeid-required")),
    (f"<pubsub xmlns='{PUBSUB}'><publish node='n'/></pubsub>", "set", ("bad-request", "item-required")),
    (f"<pubsub xmlns='{PUBSUB}'><publish node='n'><item/></publish></pubsub>", "set",
     ("bad-request", "payload-required")),
    (f"<pubsub xmlns='{PUBSUB}'><publish node='n'><item><a xmlns='u'/><b xmlns='u'/></item></publish></pubsub>",
     "set", ("bad-request", "invalid-payload")),
    (f"<pubsub xmlns='{PUBSUB}'><subscribe node='n' jid='alice@example.org'/></pubsub>", "set",
     ("feature-not-implemented", "unsupported")),
    (f"<pubsub xmlns='{PUBSUB}'><retract node='n'><item/></retract></pubsub>", "set", ("bad-request", "item-required")),
    (f"<pubsub xmlns='{PUBSUB}'><items node='nothing-here'/></pubsub>", "get", ("item-not-found", None)),
    (f"<pubsub xmlns='{PUBSUB}'><items node='n' max_items='-3'/></pubsub>", "get", ("bad-request", None)),
    (f"<pubsub xmlns='{PUBSUB}'><create/></pubsub>", "set", ("not-acceptable", "nodeid-required")),
    (publish_xml("n", "<a xmlns='u'/>").replace("</pubsub>", "") + "</pubsub>", "set", None),  # valid: created
    (f"<pubsub xmlns='{PUBSUB}'><create node='n'/></pubsub>", "set", ("conflict", None)),
    (f"<pubsub xmlns='{PUBSUB}'><create node='n3'/><configure><x xmlns='jabber:x:data' type='submit'>"
     "<field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub>", "set", None),
    (f"<pubsub xmlns='{PUBSUB}'><configure node='n3'/></pubsub>", "get", ("feature-not-implemented", "unsupported")),
    (f"<pubsub xmlns='{PUBSUB}'/>", "set", ("bad-request", None)),
    (publish_xml("n2", "<a xmlns='u'/>", access_model="roster"), "set", ("not-acceptable", None)),
    (publish_xml("n2", "<a xmlns='u'/>", max_items="zero"), "set", ("not-acceptable", None)),
    (publish_xml("n2", "<a xmlns='u'/>", bogus="1"), "set", ("not-acceptable", None)),
    (publish_xml("x" * 300, "<a xmlns='u'/>"), "set", ("not-acceptable", None)),
    (f"<pubsub xmlns='{PUBSUB}#owner'><configure node='none'/></pubsub>", "get", ("item-not-found", None)),
    (f"<pubsub xmlns='{PUBSUB}#owner'><affiliations node='n'><affiliation jid='@@' affiliation='member'/>"
     "</affiliations></pubsub>", "set", ("jid-malformed", None)),
    (f"<pubsub xmlns='{PUBSUB}#owner'><affiliations node='n'><affiliation jid='bob@example.org' "
     "affiliation='owner'/></affiliations></pubsub>", "set", ("not-acceptable", None)),
]


def test_bad_requests_get_the_xep_errors(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a"})
    alice = pep_client(xmpp_client, server, "alice")
    for payload, kind, expected in BAD:
        if expected is None:
            iq(alice, payload, kind)
            continue
        with pytest.raises(IqError) as exc:
            iq(alice, payload, kind)
        assert (condition(exc.value), app_condition(exc.value) if expected[1] else None) == expected, payload
    with pytest.raises(IqError) as exc:  # the domain has no pubsub service of its own
        iq(alice, items_xml("n"), to="example.org")
    assert condition(exc.value) == "service-unavailable"


def test_last_item_when_a_subscription_starts(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, shared_roster=False)
    alice = pep_client(xmpp_client, server, "alice")  # slixmpp approves subscription requests
    bob = pep_client(xmpp_client, server, "bob", notify=[TUNE])
    iq(alice, publish_xml(TUNE, tune("Something")), "set")
    bob.none("pubsub_publish", 0.3)  # not subscribed yet
    send_presence(bob, to="alice@example.org", type="subscribe")
    event = bob.next("pubsub_publish")  # RFC 6121 §3.1.5 + XEP-0060 §6.1.7: now subscribed
    [(_, payload)] = items_of(event)
    assert payload.findtext(f"{{{TUNE}}}title") == "Something"
    iq(alice, publish_xml(TUNE, tune("Else")), "set")
    [(_, payload)] = items_of(bob.next("pubsub_publish"))
    assert payload.findtext(f"{{{TUNE}}}title") == "Else"


def test_account_disco_items_list_the_nodes_one_may_read(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = pep_client(xmpp_client, server, "alice")
    bob = pep_client(xmpp_client, server, "bob")
    iq(alice, publish_xml(TUNE, tune("a")), "set")
    iq(alice, publish_xml("urn:example:secret", "<s xmlns='urn:example'/>", access_model="whitelist"), "set")

    def nodes(client):
        items = client.call(lambda: client.xmpp.plugin["xep_0030"].get_items("alice@example.org"))
        return {(str(jid), node) for jid, node, _ in items["disco_items"]["items"]}
    assert nodes(alice) == {("alice@example.org", TUNE), ("alice@example.org", "urn:example:secret")}
    assert nodes(bob) == {("alice@example.org", TUNE)}
