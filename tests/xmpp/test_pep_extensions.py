"""On PEP: User Avatar with vCard hashes (XEP-0084, XEP-0153, XEP-0398), Bookmarks 2 and their
private XML twin (XEP-0402, XEP-0411), private XML storage (XEP-0049), entity capabilities
(XEP-0115) verification and caching — stock slixmpp clients over STARTTLS."""
import base64
import hashlib
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from convergence.plugins.xmpp import caps

from .pep_client import PUBSUB, app_condition, event_node, items_of, items_xml, pep_client, publish_xml, result_items
from .roster_client import condition, iq, send_presence

METADATA = "urn:xmpp:avatar:metadata"
UPDATE = "{vcard-temp:x:update}x/{vcard-temp:x:update}photo"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(255, -1, -1)) * 3


def vcard_with(photo: bytes | None, name="Alice") -> str:
    inner = (f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{base64.b64encode(photo).decode()}</BINVAL></PHOTO>"
             if photo else "")
    return f"<vCard xmlns='vcard-temp'><FN>{name}</FN>{inner}</vCard>"


def photo_of(presence) -> str | None:
    return presence.xml.findtext(UPDATE)


def presence_with(client, sender: str, photo: str):
    return client.next("presence", match=lambda p: str(p["from"]).startswith(sender) and photo_of(p) == photo)


def vcard_photo(client, who: str) -> bytes | None:
    card = iq(client, "<vCard xmlns='vcard-temp'/>", to=who).xml.find("{vcard-temp}vCard")
    binval = card.findtext("{vcard-temp}PHOTO/{vcard-temp}BINVAL")
    return base64.b64decode(binval) if binval else None


def test_avatar_and_vcard_stay_consistent(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = pep_client(xmpp_client, server, "alice")
    bob = pep_client(xmpp_client, server, "bob")  # slixmpp's XEP-0084 plugin wants metadata+notify
    # a vCard PHOTO (XEP-0153) becomes the XEP-0084 avatar: metadata notified, hash in presence
    iq(alice, vcard_with(PNG), "set")
    png_id = hashlib.sha1(PNG).hexdigest()
    event = bob.next("pubsub_publish", match=lambda m: event_node(m) == METADATA)
    [(item_id, metadata)] = items_of(event)
    info = metadata.find(f"{{{METADATA}}}info")
    assert item_id == png_id and (info.get("id"), info.get("bytes"), info.get("type")) == (png_id, str(len(PNG)), "image/png")
    presence_with(bob, "alice@example.org/test", png_id)
    data = result_items(iq(bob, items_xml("urn:xmpp:avatar:data", png_id), to="alice@example.org"))
    assert base64.b64decode(data[0][1].text) == PNG
    # a new session's presence carries the hash, whatever the client put there
    send_presence(alice, status="back")
    assert photo_of(presence_with(bob, "alice@example.org/test", png_id)) == png_id
    # an XEP-0084 avatar published by a stock client: the vCard follows, contacts see the new hash
    jpeg_id = hashlib.sha1(JPEG).hexdigest()
    alice.call(lambda: alice.xmpp.plugin["xep_0084"].publish_avatar(JPEG))
    alice.call(lambda: alice.xmpp.plugin["xep_0084"].publish_avatar_metadata(
        [{"id": jpeg_id, "type": "image/jpeg", "bytes": len(JPEG)}]))
    presence_with(bob, "alice@example.org/test", jpeg_id)
    assert vcard_photo(bob, "alice@example.org") == JPEG
    card = iq(alice, "<vCard xmlns='vcard-temp'/>").xml.find("{vcard-temp}vCard")
    assert card.findtext("{vcard-temp}FN") == "Alice"  # the rest of the vCard is kept
    assert card.findtext("{vcard-temp}PHOTO/{vcard-temp}TYPE") == "image/jpeg"
    # disabling the avatar (empty metadata, XEP-0084 §4.5) removes the PHOTO; presence says none
    alice.call(lambda: alice.xmpp.plugin["xep_0084"].stop())
    bob.next("presence", match=lambda p: str(p["from"]) == "alice@example.org/test" and
             p.xml.find("{vcard-temp:x:update}x/{vcard-temp:x:update}photo") is not None and not photo_of(p))
    assert vcard_photo(bob, "alice@example.org") is None
    # and a vCard with a PHOTO again: back in PEP
    iq(alice, vcard_with(PNG), "set")
    presence_with(bob, "alice@example.org/test", png_id)


def test_avatar_bad_input(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a"}, pep_max_item_size=4096)
    alice = pep_client(xmpp_client, server, "alice")
    with pytest.raises(IqError) as exc:
        iq(alice, "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>not*base64!</BINVAL></PHOTO></vCard>", "set")
    assert condition(exc.value) == "bad-request"
    with pytest.raises(IqError) as exc:  # an avatar over pep_max_item_size
        iq(alice, vcard_with(bytes(8000)), "set")
    assert (condition(exc.value), app_condition(exc.value)) == ("not-acceptable", "payload-too-big")
    assert vcard_photo(alice, "alice@example.org") is None  # the refused vCard was not stored


CONFERENCE = ("<conference jid='{jid}' name='{name}' autojoin='true'><nick>al</nick>"
              "<password>pw</password></conference>")


def private_set(client, payload: str):
    return iq(client, f"<query xmlns='jabber:iq:private'>{payload}</query>", "set")


def private_get(client, payload: str, to=None) -> ET.Element:
    return iq(client, f"<query xmlns='jabber:iq:private'>{payload}</query>", to=to).xml.find(
        "{jabber:iq:private}query")[0]


def test_bookmarks_2_and_private_xml_convert(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    alice = pep_client(xmpp_client, server, "alice", notify=[BOOKMARKS])
    phone = pep_client(xmpp_client, server, "alice", notify=[BOOKMARKS], resource="phone")
    bob = pep_client(xmpp_client, server, "bob", notify=[BOOKMARKS])
    room1, room2 = "tea@conference.example.org", "chess@conference.example.org"
    # XEP-0049 storage:bookmarks → the PEP node (XEP-0411 §4), notified to the account's sessions
    private_set(alice, "<storage xmlns='storage:bookmarks'>" + CONFERENCE.format(jid=room1, name="Tea")
                + "<url name='site' url='https://example.org/'/></storage>")
    event = phone.next("pubsub_publish", match=lambda m: event_node(m) == BOOKMARKS)
    [(item_id, conference)] = items_of(event)
    assert item_id == room1 and conference.get("name") == "Tea" and conference.get("autojoin") == "true"
    assert conference.findtext(f"{{{BOOKMARKS}}}nick") == "al"
    bob.none("pubsub_publish", 0.3)  # whitelist: not for contacts
    with pytest.raises(IqError) as exc:
        iq(bob, items_xml(BOOKMARKS), to="alice@example.org")
    assert condition(exc.value) == "not-allowed"
    config = iq(alice, f"<pubsub xmlns='{PUBSUB}#owner'><configure node='{BOOKMARKS}'/></pubsub>")
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in config.xml.iter("{jabber:x:data}field")}
    assert (fields["pubsub#access_model"], fields["pubsub#max_items"], fields["pubsub#send_last_published_item"]) \
        == ("whitelist", "max", "never")  # XEP-0402 §3
    # a Bookmarks 2 client publishes (with the XEP-0402 publish-options): the private XML shows it
    iq(alice, publish_xml(BOOKMARKS, f"<conference xmlns='{BOOKMARKS}' name='Chess' autojoin='false'/>",
                          item_id=room2, persist_items="true", max_items="max",
                          send_last_published_item="never", access_model="whitelist"), "set")
    storage = private_get(phone, "<storage xmlns='storage:bookmarks'/>")
    rooms = {c.get("jid"): (c.get("name"), c.get("autojoin"), c.findtext("{storage:bookmarks}nick"))
             for c in storage.findall("{storage:bookmarks}conference")}
    assert rooms == {room1: ("Tea", "true", "al"), room2: ("Chess", "false", None)}
    assert storage.find("{storage:bookmarks}url").get("url") == "https://example.org/"
    # private XML without room1: retracted from the node, notified
    private_set(phone, "<storage xmlns='storage:bookmarks'><conference jid='%s' name='Chess' "
                "autojoin='0'/></storage>" % room2)
    retract = alice.next("pubsub_retract")
    assert retract.xml.find(".//{http://jabber.org/protocol/pubsub#event}retract").get("id") == room1
    assert [i for i, _ in result_items(iq(alice, items_xml(BOOKMARKS)))] == [room2]
    with pytest.raises(IqError) as exc:  # a conference without a room JID
        private_set(alice, "<storage xmlns='storage:bookmarks'><conference name='x'/></storage>")
    assert condition(exc.value) == "not-acceptable"
    # slixmpp's XEP-0048 plugin over XEP-0049, as an old client stores and reads bookmarks
    from slixmpp.plugins.xep_0048.stanza import Bookmarks

    def store_old():
        bookmarks = Bookmarks()
        bookmarks.add_conference("lobby@conference.example.org", "al", name="Lobby", autojoin=True)
        return phone.xmpp.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0049")
    phone.call(store_old)
    lobby = alice.next("pubsub_publish", match=lambda m: event_node(m) == BOOKMARKS and
                       items_of(m)[0][0] == "lobby@conference.example.org")
    assert items_of(lobby)[0][1].findtext(f"{{{BOOKMARKS}}}nick") == "al"
    got = alice.call(lambda: alice.xmpp.plugin["xep_0048"].get_bookmarks(method="xep_0049"))
    assert [c["jid"] for c in got["private"]["bookmarks"]["conferences"]] == ["lobby@conference.example.org"]


def test_private_xml_storage(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, private_max_size=1024, private_max_elements=2)
    alice = xmpp_client(server, "alice")
    bob = xmpp_client(server, "bob")
    assert ET.tostring(private_get(alice, "<prefs xmlns='urn:example:prefs'/>")) == \
        ET.tostring(ET.Element("{urn:example:prefs}prefs"))  # nothing stored: the empty element (§2)
    private_set(alice, "<prefs xmlns='urn:example:prefs'><colour>blue</colour></prefs>")
    private_set(alice, "<prefs xmlns='urn:example:prefs'><colour>red</colour></prefs>")  # replaced
    assert private_get(alice, "<prefs xmlns='urn:example:prefs'/>").findtext("{urn:example:prefs}colour") == "red"
    assert private_get(bob, "<prefs xmlns='urn:example:prefs'/>").find("{urn:example:prefs}colour") is None
    for payload, to, expected in (
            ("<prefs xmlns='urn:example:prefs'/>", "alice@example.org", "forbidden"),  # someone else's
            ("<plain/>", None, "not-acceptable"),  # in jabber:iq:private itself (§3)
            ("", None, "not-acceptable")):
        with pytest.raises(IqError) as exc:
            iq(bob, f"<query xmlns='jabber:iq:private'>{payload}</query>", to=to)
        assert condition(exc.value) == expected
    with pytest.raises(IqError) as exc:  # over private_max_size
        private_set(alice, f"<big xmlns='urn:example:big'>{'x' * 2000}</big>")
    assert condition(exc.value) == "not-acceptable"
    private_set(alice, "<b xmlns='urn:example:b'/>")
    with pytest.raises(IqError) as exc:  # a third kind over private_max_elements
        private_set(alice, "<c xmlns='urn:example:c'/>")
    assert condition(exc.value) == "not-acceptable"


def test_caps_verified_answers_are_cached_by_ver_and_lies_are_not(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"})
    first = pep_client(xmpp_client, server, "alice", notify=["urn:example:n"])
    assert len(first.caps_queries) == 1  # an unknown ver: the server asked (XEP-0115 §6.3)
    iq(first, publish_xml("urn:example:n", "<n xmlns='urn:example'/>"), "set")
    assert event_node(first.next("pubsub_publish")) == "urn:example:n"  # its answer was taken
    second = pep_client(xmpp_client, server, "alice", notify=["urn:example:n"], resource="two")
    assert event_node(second.next("pubsub_publish")) == "urn:example:n"  # the last item
    assert second.caps_queries == []  # the same verified ver: from the cache
    liar = xmpp_client(server, "bob", presence=False)
    liar.call(lambda: liar.xmpp.add_filter("in", lambda s: (liar.__dict__.setdefault("asked", []).append(s)
                                                              if s.name == "iq" and s["type"] == "get" and s["from"] == "example.org"
                                                              else None) or s))
    lie = "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:x' ver='AAAAAAAAAAAAAAAAAAAAAAAAAAA='/>"
    for _ in range(2):  # the same false ver twice: asked both times, never cached
        def send():
            presence = liar.xmpp.make_presence()
            presence.append(ET.fromstring(lie))
            presence.send()
        before = len(liar.__dict__.get("asked", []))
        liar.call(send)
        liar.next("presence", match=lambda p: str(p["from"]) == liar.jid)
        send_presence(liar, type="unavailable")
        iq(liar, "<ping xmlns='urn:xmpp:ping'/>")  # the server handled the unavailable presence
        assert len(liar.__dict__.get("asked", [])) == before + 1


# XEP-0115 §5.2 and §5.3: the specification's own examples and their hashes.
SIMPLE = """<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/><feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/></query>"""
COMPLEX = """<query xmlns='http://jabber.org/protocol/disco#info'>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/><feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/><feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
    <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
    <field var='os'><value>Mac</value></field><field var='os_version'><value>10.5.1</value></field>
    <field var='software'><value>Psi</value></field><field var='software_version'><value>0.11</value></field>
  </x></query>"""


def test_verification_string_matches_the_xep_examples():
    assert caps.verification_hash(ET.fromstring(SIMPLE), "sha-1") == "QgayPKawpkPSDYmwT/WM94uAlu0="
    assert caps.verification_hash(ET.fromstring(COMPLEX), "sha-1") == "q07IKJEyjvHSyhy//CH0CxmKi8w="
    doubled = ET.fromstring(SIMPLE)
    doubled.append(ET.fromstring("<feature xmlns='http://jabber.org/protocol/disco#info' var='http://jabber.org/protocol/muc'/>"))
    assert caps.verification_hash(doubled, "sha-1") is None  # §5.4: duplicate features


def test_fuzzed_pubsub_requests_are_answered_and_the_server_keeps_serving(xmpp_server, xmpp_client):
    import random
    rng = random.Random(115)
    server = xmpp_server({"alice": "pw-a", "bob": "pw-b"}, pep_max_nodes=8)
    alice = pep_client(xmpp_client, server, "alice", notify=["n0"])
    bob = pep_client(xmpp_client, server, "bob")
    nodes = ["n0", "n1", "", "x" * 256, "ünï", "urn:xmpp:avatar:metadata", "urn:xmpp:bookmarks:1"]
    ids = ["a", "", "current", "y" * 300, "ü"]
    payloads = ["<p xmlns='urn:f'/>", "", "<a xmlns='u'/><b xmlns='u'/>", "<metadata xmlns='urn:xmpp:avatar:metadata'>"
                "<info id='zz' bytes='x'/></metadata>", "<conference xmlns='urn:xmpp:bookmarks:1'/>"]
    actions = ["publish", "retract", "items", "create", "subscribe", "delete", "configure", "affiliations", "purge", "bogus"]
    answered = 0
    for _ in range(120):
        action, node = rng.choice(actions), rng.choice(nodes)
        ns = PUBSUB + ("#owner" if action in ("delete", "configure", "affiliations", "purge") and rng.random() < 0.8 else "")
        attrs = f" node='{node}'" if node or rng.random() < 0.5 else ""
        if rng.random() < 0.3:
            attrs += f" max_items='{rng.choice(['0', '-1', 'max', '99999999999', '2'])}'"
        item = f"<item id='{rng.choice(ids)}'>{rng.choice(payloads)}</item>" if rng.random() < 0.8 else ""
        payload = f"<pubsub xmlns='{ns}'><{action}{attrs}>{item}</{action}></pubsub>"
        client = alice if rng.random() < 0.7 else bob
        try:
            iq(client, payload, rng.choice(["get", "set"]), to=rng.choice([None, "alice@example.org"]))
        except IqError as exc:
            assert condition(exc) != "internal-server-error", payload
        answered += 1
    assert answered == 120
    assert iq(bob, "<ping xmlns='urn:xmpp:ping'/>") is not None


def test_verification_string_fuzz():
    """Seeded mutations of the §5.3 answer: never an exception, order never matters (§5.1 sorts)."""
    import random
    rng = random.Random(1150)
    base = ET.fromstring(COMPLEX)
    junk = ["<identity xmlns='http://jabber.org/protocol/disco#info'/>",
            "<feature xmlns='http://jabber.org/protocol/disco#info'/>",
            "<feature xmlns='http://jabber.org/protocol/disco#info' var='x&lt;y'/>",
            "<x xmlns='jabber:x:data'/>",
            "<x xmlns='jabber:x:data'><field var='FORM_TYPE' type='text-single'><value>a</value></field></x>",
            "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>a</value><value>b</value></field></x>",
            "<x xmlns='jabber:x:data'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value>"
            "</field></x>",
            "<x xmlns='jabber:x:data'><field><value>v</value></field><field var='f'/></x>",
            "<other xmlns='urn:x'><deep><deeper/></deep></other>"]
    for _ in range(500):
        query = ET.fromstring(ET.tostring(base))
        for _ in range(rng.randint(0, 3)):
            query.append(ET.fromstring(rng.choice(junk)))
        for child in list(query):
            if rng.random() < 0.15:
                query.remove(child)
        for child in query.iter():
            for key in list(child.attrib):
                if rng.random() < 0.05:
                    child.set(key, rng.choice(["", "é", "<", "a" * 300]))
        result = caps.verification_string(query)
        assert result is None or isinstance(result, str)
        shuffled = ET.Element(query.tag)
        children = list(query)
        rng.shuffle(children)
        shuffled.extend(children)
        assert caps.verification_string(shuffled) == result
