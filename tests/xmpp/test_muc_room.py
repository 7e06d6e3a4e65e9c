"""The sans-IO room of XEP-0045 (plugins/xmpp/muc.py), without a server: nicks, joining rules,
history selection, moderation and administration, configuration forms."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest

from convergence import Address
from convergence.config import ConfigError
from convergence.plugins.xmpp.muc import (DATA, MUC, MUC_ADMIN, MUC_USER, History, HistoryEntry,
                                          Room, RoomConfig, apply_form, check_nick,
                                          config_form, nick_key)
from convergence.plugins.xmpp.stanzas import StanzaError, tag

ROOM = Address("lobby", "conference.example.org")
NOW = datetime(2026, 1, 1, 12, 0, 0)
OWNER, ADMIN, MEMBER, OTHER, STRANGER = (Address(n, "example.org", "res") for n in
                                         ("owner", "admin", "member", "other", "stranger"))


def room(**config) -> Room:
    r = Room(ROOM, RoomConfig(**config), {OWNER.bare: "owner", ADMIN.bare: "admin",
                                          MEMBER.bare: "member"})
    r.join(OWNER, "owner", None, None, History(maxstanzas=0), NOW)
    return r


def enter(r: Room, jid: Address, nick: str, password: str | None = None, **options):
    return r.join(jid, nick, None, password, History(maxstanzas=0), NOW, **options)


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(StanzaError) as failed:
        fn(*args, **kwargs)
    return failed.value.condition


def codes(element: ET.Element) -> set[str]:
    return {s.get("code") for s in element.iter(tag("status", MUC_USER))}


def item_of(element: ET.Element) -> ET.Element:
    return element.find(f"{tag('x', MUC_USER)}/{tag('item', MUC_USER)}")


def admin_items(*attrs: dict) -> list[ET.Element]:
    return [ET.Element(tag("item", MUC_ADMIN), a) for a in attrs]


# -- nicks and names --
@pytest.mark.parametrize("a, b", [("Bob", "bob"), ("ＢＯＢ", "bob"), ("bob  smith", "Bob Smith"),
                                  ("ǅ", "ǆ"), ("e\u0301", "é"), ("José", "jose"),
                                  ("раураl", "paypal"), ("Οκ", "ok")])
def test_nicks_that_look_alike_have_one_key(a, b):
    assert nick_key(a) == nick_key(b)


@pytest.mark.parametrize("nick", [None, "", "   ", "a\x07b", "x" * 1024, "\u200b\u2028"])
def test_bad_nicks_are_jid_malformed(nick):
    assert error(check_nick, nick) == "jid-malformed"


# -- entering --
def test_first_presence_order_and_codes():
    r = room()
    out = enter(r, OTHER, "other", created=False)
    assert [to for to, _ in out] == [OTHER, OWNER, OTHER, OTHER]  # others, to others, self, subject
    own = out[2][1]
    assert codes(own) == {"110"} and item_of(own).get("role") == "participant"
    assert item_of(out[0][1]).get("jid") is None  # semi-anonymous: participants see no JIDs
    assert item_of(out[1][1]).get("jid") == str(OTHER)  # the moderator does
    assert out[3][1].find(tag("subject")) is not None


def test_non_anonymous_rooms_show_jids_and_say_so():
    r = room(whois="anyone")
    out = enter(r, OTHER, "other")
    assert item_of(out[0][1]).get("jid") == str(OWNER) and "100" in codes(out[2][1])


@pytest.mark.parametrize("config, jid, password, condition", [
    ({"members_only": True}, OTHER, None, "registration-required"),
    ({"password": "s"}, OTHER, None, "not-authorized"),
    ({"password": "s"}, OTHER, "t", "not-authorized"),
    ({"max_users": 1}, OTHER, None, "service-unavailable"),
])
def test_entry_rules(config, jid, password, condition):
    assert error(enter, room(**config), jid, "nick", password) == condition


def test_admins_enter_full_rooms_and_owners_need_no_password():
    r = room(max_users=1, password="s")
    assert codes(enter(r, ADMIN, "admin", "s")[-2][1]) == {"110"}
    Room(ROOM, RoomConfig(password="s"), {OWNER.bare: "owner"}).join(
        OWNER, "o", None, None, History(), NOW)


def test_outcasts_and_locked_rooms():
    r = room()
    r.affiliations[OTHER.bare] = "outcast"
    assert error(enter, r, OTHER, "other") == "forbidden"
    r.locked = True
    assert error(enter, r, MEMBER, "member") == "item-not-found"


@pytest.mark.parametrize("nick", ["owner", "OWNER", "ｏｗｎｅｒ", "owner@example.org",
                                  "Owner@Example.org/res", "admin@example.org"])
def test_taken_and_impersonating_nicks_conflict(nick):
    assert error(enter, room(), OTHER, nick) == "conflict"


def test_a_full_room_is_checked_after_the_nick():
    r = room(max_users=1)
    assert error(enter, r, OTHER, "owner") == "conflict"


# -- nick changes, presence, leaving --
def test_nick_change_sends_303_then_the_new_nick():
    r = room()
    enter(r, OTHER, "other")
    out = r.change_nick(OTHER, "Other2")
    kinds = [(to, e.get("type"), e.get("from")) for to, e in out]
    assert kinds == [(OWNER, "unavailable", f"{ROOM}/other"), (OTHER, "unavailable", f"{ROOM}/other"),
                     (OWNER, None, f"{ROOM}/Other2"), (OTHER, None, f"{ROOM}/Other2")]
    assert "303" in codes(out[0][1]) and item_of(out[0][1]).get("nick") == "Other2"
    assert error(r.change_nick, OTHER, "OWNER") == "conflict"
    assert r.occupant("other2").jid == OTHER and r.occupant("other") is None


def test_leaving():
    r = room()
    enter(r, OTHER, "other")
    out = r.leave(OTHER)
    assert {to for to, _ in out} == {OWNER, OTHER} and "110" in codes(dict(out)[OTHER])
    assert r.leave(OTHER) == [] and OTHER not in r.by_jid


# -- messages --
def test_groupchat_reaches_everyone_and_history_is_bounded():
    r = room(history=2)
    r.set_history_size(2)
    enter(r, OTHER, "other")
    for n in range(3):
        out, entry = r.groupchat(OTHER, f"m{n}", None, (), f"id{n}", NOW)
    assert {to for to, _ in out} == {OWNER, OTHER} and entry.body == "m2"
    assert [e.body for e in r.history] == ["m1", "m2"]
    assert error(r.groupchat, STRANGER, "hi", None, (), "x", NOW) == "not-acceptable"


def test_visitors_and_subjects():
    r = room(moderated=True)
    enter(r, OTHER, "other")
    assert r.by_jid[OTHER].role == "visitor"
    assert error(r.groupchat, OTHER, "hi", None, (), "x", NOW) == "forbidden"
    enter(r, MEMBER, "member")
    assert error(r.groupchat, MEMBER, "", "topic", (), "x", NOW) == "forbidden"
    out, entry = r.groupchat(OWNER, "", "topic", (), "x", NOW)
    assert entry is None and r.subject == "topic" and r.subject_by == "owner"
    r.config = RoomConfig(change_subject=True)
    r.groupchat(MEMBER, "", "ours", (), "y", NOW)
    assert r.subject == "ours"


def test_private_messages():
    r = room()
    enter(r, OTHER, "other")
    message = ET.Element(tag("message"), {"type": "chat", "from": str(OTHER), "to": f"{ROOM}/owner"})
    [(to, copy)] = r.private(OTHER, "owner", message)
    assert to == OWNER and copy.get("from") == f"{ROOM}/other" and copy.get("to") == str(OWNER)
    assert error(r.private, OTHER, "nobody", message) == "item-not-found"
    assert error(r.private, STRANGER, "owner", message) == "not-acceptable"


# -- history on joining (§7.2.14) --
ENTRIES = [HistoryEntry("n", "n@example.org", NOW - timedelta(minutes=10 - i), f"body{i}")
           for i in range(10)]


@pytest.mark.parametrize("history, expected", [
    (History(maxstanzas=3), ["body7", "body8", "body9"]),
    (History(maxstanzas=0), []),
    (History(maxchars=0), []),
    (History(maxchars=220), ["body8", "body9"]),
    (History(seconds=150), ["body8", "body9"]),
    (History(since=NOW - timedelta(seconds=150)), ["body8", "body9"]),
    (History(), [f"body{i}" for i in range(5, 10)]),  # the ceiling (5 here)
])
def test_history_selection(history, expected):
    assert [e.body for e in history.select(ENTRIES, NOW, 5)] == expected


def x_with(history: str) -> ET.Element:
    return ET.fromstring(f"<x xmlns='{MUC}'>{history}</x>")


def test_history_requests_parse():
    assert History.parse(None, 20) == History(maxstanzas=20)
    assert History.parse(x_with(""), 20) == History(maxstanzas=20)
    assert History.parse(x_with(f"<history xmlns='{MUC}' maxstanzas='5' seconds='-3'/>"), 20) == \
        History(maxstanzas=5, seconds=0)
    since = History.parse(x_with(f"<history xmlns='{MUC}' since='2026-01-01T11:00:00Z'/>"), 20)
    assert since.since == datetime(2026, 1, 1, 11, 0, 0)
    for bad in ("maxstanzas='many'", "since='yesterday'"):
        assert error(History.parse, x_with(f"<history xmlns='{MUC}' {bad}/>"), 20) == "bad-request"


# -- moderation and administration --
def test_kick_and_voice():
    r = room(moderated=True)
    enter(r, OTHER, "other")
    enter(r, ADMIN, "admin")
    out, changed = r.admin_set(OWNER, admin_items({"nick": "other", "role": "participant"}))
    assert not changed and r.by_jid[OTHER].role == "participant" and len(out) == 3
    assert error(r.admin_set, OTHER, admin_items({"nick": "owner", "role": "none"})) == "forbidden"
    assert error(r.admin_set, ADMIN, admin_items({"nick": "owner", "role": "none"})) == "not-allowed"
    out, _ = r.admin_set(ADMIN, admin_items({"nick": "other", "role": "none"}))
    assert OTHER not in r.by_jid and all("307" in codes(e) for _, e in out)
    assert dict(out)[OTHER].get("type") == "unavailable" and "110" in codes(dict(out)[OTHER])
    enter(r, OTHER, "other")  # a moderator by grant (no affiliation) may kick a member (§8.2)
    enter(r, MEMBER, "member")
    r.admin_set(OWNER, admin_items({"nick": "other", "role": "moderator"}))
    r.admin_set(OTHER, admin_items({"nick": "member", "role": "none"}))
    assert MEMBER not in r.by_jid


def test_ban_membership_and_all_or_nothing():
    r = room(members_only=True)
    enter(r, MEMBER, "member")
    items = admin_items({"jid": "member@example.org", "affiliation": "outcast"},
                        {"jid": "owner@example.org", "affiliation": "none"})
    assert error(r.admin_set, OWNER, items) == "conflict"  # the last owner: nothing changes
    assert r.affiliation(MEMBER) == "member" and MEMBER in r.by_jid
    assert error(r.admin_set, ADMIN, admin_items({"jid": "owner@example.org",
                                                  "affiliation": "outcast"})) == "not-allowed"
    out, changed = r.admin_set(OWNER, admin_items({"jid": "member@example.org", "affiliation": "none"}))
    assert changed and MEMBER not in r.by_jid and "321" in codes(out[0][1])
    r.affiliations[MEMBER.bare] = "member"
    enter(r, MEMBER, "member")
    out, _ = r.admin_set(ADMIN, admin_items({"jid": "member@example.org", "affiliation": "outcast"}))
    assert "301" in codes(out[0][1]) and r.affiliation(MEMBER) == "outcast"
    assert error(r.admin_set, OWNER, admin_items({"jid": "a@b@c", "affiliation": "member"})) == "jid-malformed"
    assert error(r.admin_set, OWNER, admin_items({"nick": "x", "role": "king"})) == "bad-request"


def test_lists_need_rank():
    r = room()
    enter(r, OTHER, "other")
    query = ET.Element(tag("query", MUC_ADMIN))
    query.append(ET.Element(tag("item", MUC_ADMIN), affiliation="member"))
    assert error(r.admin_get, OTHER, query) == "forbidden"
    assert [i.get("jid") for i in r.admin_get(OWNER, query)] == ["member@example.org"]


# -- configuration (§10) --
def submitted(**values) -> ET.Element:
    form = ET.Element(tag("x", DATA), type="submit")
    for var, value in values.items():
        field = ET.SubElement(form, tag("field", DATA), var=var.replace("__", "#"))
        ET.SubElement(field, tag("value", DATA)).text = value
    return form


def test_form_round_trip():
    config = RoomConfig(name="n", persistent=True, password="pw", max_users=7, whois="anyone")
    form = config_form(config, 50, 100)
    for field in form.iter(tag("field", DATA)):
        field.attrib.pop("type", None)
    assert apply_form(RoomConfig(), form, 50, 100) == config


@pytest.mark.parametrize("values", [
    {"muc__roomconfig_persistentroom": "yes"}, {"muc__roomconfig_maxusers": "0"},
    {"muc__roomconfig_maxusers": "51"}, {"muc__roomconfig_whois": "all"},
    {"muc__roomconfig_passwordprotectedroom": "1"}, {"muc__roomconfig_roomname": "x" * 2000},
    {"muc__maxhistoryfetch": "101"},
])
def test_bad_forms_are_not_acceptable(values):
    assert error(apply_form, RoomConfig(), submitted(**values), 50, 100) == "not-acceptable"


def test_configuring_unlocks_and_applies_to_occupants():
    r = room()
    r.locked = True
    assert error(enter, r, OTHER, "other") == "item-not-found"
    assert r.configure(OWNER, submitted(), 50, 100) == [] and not r.locked  # an instant room
    enter(r, OTHER, "other")
    enter(r, MEMBER, "member")
    assert error(r.configure, OTHER, submitted(), 50, 100) == "forbidden"
    out = r.configure(OWNER, submitted(muc__roomconfig_membersonly="1"), 50, 100)
    assert OTHER not in r.by_jid and MEMBER in r.by_jid and "322" in codes(out[0][1])
    r.configure(OWNER, submitted(muc__roomconfig_moderatedroom="1"), 50, 100)
    assert r.by_jid[MEMBER].role == "participant" and not r.locked


def test_invitations():
    r = room(members_only=True, allow_invites=False, password="pw")
    enter(r, MEMBER, "member", "pw")
    assert error(r.invite, MEMBER, OTHER, None) == "forbidden"
    element, added = r.invite(OWNER, OTHER, "come")
    assert added and r.affiliation(OTHER) == "member"
    x = element.find(tag("x", MUC_USER))
    assert x.find(tag("invite", MUC_USER)).get("from") == "owner@example.org"
    assert x.findtext(tag("password", MUC_USER)) == "pw" and element.get("from") == str(ROOM)
    assert error(r.invite, STRANGER, OTHER, None) == "not-acceptable"


def test_destroy():
    r = room()
    enter(r, OTHER, "other")
    assert error(r.destroy, OTHER, None) == "forbidden"
    out = r.destroy(OWNER, "bye")
    assert not r.occupants and len(out) == 2
    assert out[0][1].find(f".//{tag('destroy', MUC_USER)}") is not None


def test_features_follow_the_configuration():
    assert set(room(persistent=True, members_only=True, password="x").features()) >= {
        MUC, "muc_persistent", "muc_membersonly", "muc_passwordprotected", "muc_semianonymous"}


# -- the service's domain ([xmpp] muc_domain) --
def test_muc_domain_setting():
    from convergence.plugins.xmpp import muc_domain_setting
    from convergence.plugins.xmpp.muc_service import muc_domain
    assert muc_domain("conference.{domain}", "Example.org") == "conference.example.org"
    assert muc_domain("chat.example.net", "example.org") == "chat.example.net"
    assert muc_domain("", "example.org") is None
    with pytest.raises(ConfigError):
        muc_domain("{domain}", "example.org")
    for bad in ("bad domain", 5, "-x.{domain}"):
        with pytest.raises(ValueError):
            muc_domain_setting(bad)


@pytest.mark.parametrize("setting, routed", [("", False), ("rooms.{domain}", True)])
def test_muc_domain_on_and_off(make_core, setting, routed):
    core = make_core({"server": {"domain": "example.org"}, "xmpp": {"muc_domain": setting}})
    server = core.pm.get_plugin("xmpp:server")
    route = core.hook.resolve_recipient(core=core, address=Address("r", "rooms.example.org"))
    assert (server.muc is not None) == routed and (route is not None) == routed
    assert server.service.iq.server_items() == ([("rooms.example.org", "Chatrooms")] if routed else [])


def test_chat_states_are_passed_on_but_not_kept():
    r = room()
    state = ET.Element("{http://jabber.org/protocol/chatstates}composing")
    out, entry = r.groupchat(OWNER, "", None, (state,), "x", NOW)
    assert entry is None and not r.history and out[0][1].find(state.tag) is not None


def test_roles_follow_affiliation_changes():
    r = room()
    enter(r, OTHER, "other")
    enter(r, ADMIN, "admin")
    r.admin_set(OWNER, admin_items({"nick": "other", "role": "moderator"}))
    r.admin_set(OWNER, admin_items({"jid": "other@example.org", "affiliation": "member"}))
    assert r.by_jid[OTHER].role == "moderator"  # granted as such: stays
    r.admin_set(OWNER, admin_items({"jid": "admin@example.org", "affiliation": "member"}))
    assert r.by_jid[ADMIN].role == "participant"  # a moderator by being admin: no longer
    r.admin_set(OWNER, admin_items({"jid": "admin@example.org", "affiliation": "owner"}))
    assert r.by_jid[ADMIN].role == "moderator" and r.affiliation(ADMIN) == "owner"


# -- the service in one process (no sockets): a phone binding and an XMPP session in a room --
class FakeSession:
    """What the MUC service needs of a bound XMPP session."""

    def __init__(self, address: Address):
        self.account, self.address, self.sent = address.bare, address, []
        self.available = False  # no presence broadcast to it (presence.py): only the room's

    def send(self, element: ET.Element) -> bool:
        self.sent.append(element)
        return True


def test_service_with_a_phone_binding_and_stored_rooms(make_core):
    from convergence import Message
    from convergence.plugins.xmpp.messages import XmppMessage
    from convergence.testing import RecordingEndpoint
    core = make_core({"server": {"domain": "example.org"}})
    for name in ("alice", "bob"):
        core.add_account(name, "pw")
    muc = core.pm.get_plugin("xmpp:server").muc
    alice = FakeSession(core.address("alice", "pc"))
    muc.xmpp.bind(alice)
    room = Address("lobby", muc.domain)
    muc.presence(ET.fromstring(f"<presence xmlns='jabber:client' from='{alice.address}' "
                               f"to='{room}/alice'><x xmlns='{MUC}'/></presence>"))
    assert "201" in codes(alice.sent[-2])
    muc.iq(alice, ET.fromstring(
        f"<iq xmlns='jabber:client' type='set' id='c' to='{room}'><query xmlns='{MUC}#owner'>"
        f"<x xmlns='{DATA}' type='submit'><field var='muc#roomconfig_persistentroom'>"
        "<value>1</value></field></x></query></iq>"))
    assert alice.sent[-1].get("type") == "result"

    phone = RecordingEndpoint(core.address("bob", "sip-1"), "sip")
    core.presence.register(phone, 300)
    assert core.send(Message(phone.address, room, "hi all\r\n", type="chat"), "sip") == "delivered"
    said = alice.sent[-1]
    assert said.get("from") == f"{room}/bob" and said.findtext(tag("body")) == "hi all"
    core.send(XmppMessage(alice.address, room, "hello bob", type="groupchat"), "xmpp")
    [reply] = phone.received  # its own message is not echoed to it
    assert (reply.sender, reply.body, reply.type) == (room, "alice: hello bob", "chat")
    core.presence.unregister(phone)  # the binding went: the phone left the room
    assert alice.sent[-1].get("type") == "unavailable" and alice.sent[-1].get("from") == f"{room}/bob"

    muc.gone(alice.address)  # the session ended: the (persistent) room leaves memory, not SQL
    assert not muc.rooms and not muc.joined
    info = FakeSession(core.address("bob", "pc"))
    muc.iq(info, ET.fromstring(f"<iq xmlns='jabber:client' type='get' id='i' to='{room}'>"
                               "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
    assert info.sent[-1].get("type") == "result" and not muc.rooms  # read back, then let go
    assert [e.body for e in muc.room("lobby").history] == ["hi all", "hello bob"]
