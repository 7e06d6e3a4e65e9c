"""Multi-User Chat (XEP-0045) and self-ping (XEP-0410) with stock slixmpp clients (plugin
xep_0045) over STARTTLS; a SIP phone (SIPp) and the HTTP API taking part in a room; persistent
rooms across a restart. The room's rules are unit-tested without a server in test_muc_room.py."""
from __future__ import annotations


import pytest
from slixmpp.exceptions import IqError, PresenceError

from actors import condition as stanza_condition
from api_client import call
from sipp_runner import Sipp, needs_sipp, request

from .roster_client import condition, iq

MUC = "http://jabber.org/protocol/muc"
MUC_USER = MUC + "#user"
MUC_ADMIN = MUC + "#admin"
MUC_OWNER = MUC + "#owner"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
SERVICE = "conference.example.org"
ROOM = f"lobby@{SERVICE}"
ACCOUNTS = {"alice": "pw-a", "bob": "pw-b", "carol": "pw-c", "dave": "pw-d"}


def client(xmpp_client, server, name: str, **options):
    c = xmpp_client(server, name, **options)
    for plugin in ("xep_0004", "xep_0045", "xep_0082", "xep_0203"):
        c.xmpp.register_plugin(plugin)
    for event in ("groupchat_message", "groupchat_subject", "groupchat_invite",
                  "groupchat_decline", "groupchat_presence"):
        c._watch(event)
    return c


def join(c, room: str, nick: str, **options):
    """XEP-0045 §7.2 through slixmpp: (self-presence, subject, occupants, history)."""
    async def go():
        return await c.xmpp.plugin["xep_0045"].join_muc_wait(room, nick, timeout=5, **options)
    return c.call(go)


def join_error(c, room: str, nick: str, **options) -> str:
    with pytest.raises(PresenceError) as failed:
        join(c, room, nick, **options)
    return failed.value.presence["error"]["condition"]


def codes(presence) -> set[int]:
    return set(presence["muc"]["status_codes"])


def configure(c, room: str, **fields):
    """Fill in the owner's form (§10.1.3) and submit it."""
    async def go():
        muc = c.xmpp.plugin["xep_0045"]
        form = await muc.get_room_config(room)
        for var, value in fields.items():
            form.field[var]["value"] = value
        await muc.set_room_config(room, form)
    c.call(go)


def instant(c, room: str):
    """§10.1.2: accept the default configuration (an empty submitted form)."""
    iq(c, f"<query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query>", "set", room)


def create(c, room: str, nick: str, **fields):
    presence, *_ = join(c, room, nick)
    assert {110, 201} <= codes(presence)  # §10.1.1: a new room
    configure(c, room, **fields) if fields else instant(c, room)
    return presence


def groupchat(c, room: str, body: str = "", subject: str | None = None):
    def send():
        message = c.xmpp.make_message(mto=room, mbody=body or None, mtype="groupchat")
        if subject is not None:
            message["subject"] = subject
        message.send()
    c.call(send)


def said(c, room: str, nick: str, body: str, timeout: float = 5):
    """Wait for ``nick``'s groupchat message ``body`` in ``room``."""
    return c.next("groupchat_message", timeout,
                  lambda m: str(m["from"]) == f"{room}/{nick}" and m["body"] == body)


def presence_of(c, room: str, nick: str, type: str = "available", role: str | None = None,
                timeout: float = 5):
    return c.next("groupchat_presence", timeout,
                  lambda p: str(p["from"]) == f"{room}/{nick}" and p["type"] == type
                  and role in (None, p["muc"]["role"]))


def admin(c, room: str, *items: str, type: str = "set"):
    return iq(c, f"<query xmlns='{MUC_ADMIN}'>{''.join(items)}</query>", type, room)


def item(**attrs) -> str:
    return "<item " + " ".join(f"{k}='{v}'" for k, v in attrs.items()) + "/>"


def error_of(c, room: str, timeout: float = 5) -> str:
    message = c.next("message_error", timeout, lambda m: m["from"].bare == room)
    return stanza_condition(message)  # read from the XML: slixmpp lacks policy-violation


def test_create_join_talk_and_leave(xmpp_server, xmpp_client):
    """§10.1 reserved room with the owner's form, §7.2 joining (110, occupants, history, subject),
    §7.4 messages, §7.5 private messages, §8.1 subject, §7.6 nick change (303), §7.2.9 nick
    conflicts and impersonation, §7.14 leaving, XEP-0410 self-ping, §6 discovery."""
    server = xmpp_server(ACCOUNTS)
    alice, bob, carol = (client(xmpp_client, server, n) for n in ("alice", "bob", "carol"))

    # a reserved room stays locked until its owner submits the form (§10.1.2)
    presence, *_ = join(alice, ROOM, "Alice")
    assert {110, 201} <= codes(presence) and presence["muc"]["affiliation"] == "owner"
    assert presence["muc"]["role"] == "moderator"
    assert join_error(bob, ROOM, "bob") == "item-not-found"
    configure(alice, ROOM, **{"muc#roomconfig_roomname": "The Lobby",
                              "muc#roomconfig_persistentroom": True})

    # discovery (§6): the service, its rooms, the room's features and info form
    info = iq(bob, f"<query xmlns='{DISCO_INFO}'/>", to=SERVICE).xml.find(f"{{{DISCO_INFO}}}query")
    identity = info.find(f"{{{DISCO_INFO}}}identity")
    assert (identity.get("category"), identity.get("type")) == ("conference", "text")
    assert MUC in {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
    items = iq(bob, f"<query xmlns='{DISCO_ITEMS}'/>", to=SERVICE).xml.iter(f"{{{DISCO_ITEMS}}}item")
    assert {(i.get("jid"), i.get("name")) for i in items} == {(ROOM, "The Lobby")}
    info = iq(bob, f"<query xmlns='{DISCO_INFO}'/>", to=ROOM).xml.find(f"{{{DISCO_INFO}}}query")
    features = {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
    assert {MUC, "muc_persistent", "muc_public", "muc_open", "muc_unmoderated", "muc_unsecured",
            "muc_semianonymous"} <= features
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in info.iter("{jabber:x:data}field")}
    assert fields["FORM_TYPE"] == MUC + "#roominfo" and fields["muc#roominfo_occupants"] == "1"

    # bob joins: alice's presence, then his own with 110; alice sees him come
    presence, subject, occupants, history = join(bob, ROOM, "bob")
    assert 110 in codes(presence) and 201 not in codes(presence)
    assert [str(p["from"]) for p in occupants] == [f"{ROOM}/Alice", f"{ROOM}/bob"]  # others first
    assert occupants[0]["muc"]["jid"] == ""  # semi-anonymous: participants see no real JIDs
    assert not subject["subject"] and history == []  # the empty subject comes all the same
    seen = presence_of(alice, ROOM, "bob")
    assert str(seen["muc"]["jid"]) == server.jid("bob", "test")  # moderators do (§7.2.4)

    # nick conflicts (§7.2.9): taken, taken but for case and width, another user's address
    assert join_error(carol, ROOM, "bob") == "conflict"
    assert join_error(carol, ROOM, "ＢＯＢ") == "conflict"
    assert join_error(carol, ROOM, "alice@example.org") == "conflict"

    # messages to everyone (§7.4), the subject (§8.1), private messages (§7.5)
    groupchat(bob, ROOM, "hello all")
    for c in (alice, bob):
        said(c, ROOM, "bob", "hello all")
    groupchat(bob, ROOM, subject="bob's topic")
    assert error_of(bob, ROOM) == "forbidden"  # participants may not change it here
    groupchat(alice, ROOM, subject="Welcome")
    for c in (alice, bob):
        c.next("groupchat_subject", match=lambda m: m["subject"] == "Welcome")
    bob.send_message(f"{ROOM}/Alice", "psst")
    private = alice.next("message", match=lambda m: m["body"] == "psst")
    assert str(private["from"]) == f"{ROOM}/bob" and private["type"] == "chat"
    carol.send_message(ROOM, "not in the room", type="groupchat")
    assert error_of(carol, ROOM) == "not-acceptable"

    # history on joining (§7.2.14): bounded by what the client asks for; subject last
    for n in range(3):
        groupchat(alice, ROOM, f"message {n}")
    said(bob, ROOM, "Alice", "message 2")
    presence, subject, _, history = join(carol, ROOM, "carol", maxstanzas=2)
    assert [m["body"] for m in history] == ["message 1", "message 2"]
    assert all(m["delay"]["from"] == ROOM for m in history)
    assert subject["subject"] == "Welcome" and str(subject["from"]) == f"{ROOM}/Alice"

    # self-ping (XEP-0410): yes for one's own occupant JID, not-acceptable otherwise
    assert iq(bob, "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/bob")["type"] == "result"
    with pytest.raises(IqError) as failed:
        iq(bob, "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/carol")
    assert condition(failed.value) == "not-acceptable"

    # nick change (§7.6): unavailable with 303 and the new nick, then available
    bob.call(lambda: bob.xmpp.send_presence(pto=f"{ROOM}/robert"))
    gone = presence_of(alice, ROOM, "bob", "unavailable")
    assert 303 in codes(gone) and gone["muc"]["item_nick"] == "robert"
    presence_of(alice, ROOM, "robert")
    groupchat(bob, ROOM, "renamed")
    said(carol, ROOM, "robert", "renamed")

    # leaving (§7.14), and leaving by disconnecting
    bob.call(lambda: bob.xmpp.plugin["xep_0045"].leave_muc(ROOM, "robert", "bye"))
    own = presence_of(bob, ROOM, "robert", "unavailable")
    assert 110 in codes(own)
    presence_of(alice, ROOM, "robert", "unavailable")
    carol.disconnect()
    presence_of(alice, ROOM, "carol", "unavailable")
    with pytest.raises(IqError) as failed:
        iq(bob, "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/robert")
    assert condition(failed.value) == "not-acceptable"


def test_roles_affiliations_and_protected_rooms(xmpp_server, xmpp_client):
    """§8 moderation (kick 307, voice), §9 administration (ban 301, members), §10 owners;
    members-only (407), password (401), moderated rooms, max users (503)."""
    server = xmpp_server(ACCOUNTS)
    alice, bob, carol, dave = (client(xmpp_client, server, n) for n in ACCOUNTS)
    create(alice, ROOM, "alice", **{"muc#roomconfig_moderatedroom": True,
                                    "muc#roomconfig_maxusers": "3"})
    presence, *_ = join(bob, ROOM, "bob")
    assert presence["muc"]["role"] == "visitor"  # moderated: no voice without membership
    groupchat(bob, ROOM, "may I?")
    assert error_of(bob, ROOM) == "forbidden"

    # voice (§8.3) by nick, then revoked (§8.4); a participant cannot moderate
    admin(alice, ROOM, item(nick="bob", role="participant"))
    assert presence_of(bob, ROOM, "bob", role="participant")
    groupchat(bob, ROOM, "thanks")
    said(alice, ROOM, "bob", "thanks")
    with pytest.raises(IqError) as failed:
        admin(bob, ROOM, item(nick="alice", role="none"))
    assert condition(failed.value) == "forbidden"

    # the room is full at 3 (§7.2.10), but not for its admins
    join(carol, ROOM, "carol")
    assert join_error(dave, ROOM, "dave") == "service-unavailable"
    admin(alice, ROOM, item(jid="dave@example.org", affiliation="admin"))
    presence, *_ = join(dave, ROOM, "dave")
    assert (presence["muc"]["affiliation"], presence["muc"]["role"]) == ("admin", "moderator")
    with pytest.raises(IqError) as failed:  # an admin cannot touch the owner (§9.x)
        admin(dave, ROOM, item(jid="alice@example.org", affiliation="outcast"))
    assert condition(failed.value) == "not-allowed"

    # kick (§8.2): 307 to everyone; the kicked may come back
    admin(dave, ROOM, "<item nick='carol' role='none'><reason>behave</reason></item>")
    kicked = presence_of(carol, ROOM, "carol", "unavailable")
    assert {110, 307} <= codes(kicked) and kicked["muc"]["item"]["reason"] == "behave"
    assert 307 in codes(presence_of(alice, ROOM, "carol", "unavailable"))
    # ban (§9.1): 301, and the outcast cannot enter again (§7.2.8)
    admin(alice, ROOM, item(jid="bob@example.org", affiliation="outcast"))
    assert {110, 301} <= codes(presence_of(bob, ROOM, "bob", "unavailable"))
    assert join_error(bob, ROOM, "bobby") == "forbidden"
    outcasts = admin(alice, ROOM, item(affiliation="outcast"), type="get")
    assert [i.get("jid") for i in outcasts.xml.iter(f"{{{MUC_ADMIN}}}item")] == ["bob@example.org"]
    with pytest.raises(IqError) as failed:  # the last owner stays (§10.6)
        admin(alice, ROOM, item(jid="alice@example.org", affiliation="none"))
    assert condition(failed.value) == "conflict"

    # members-only (§7.2.7: 407) and password-protected (§7.2.6: 401) rooms
    secret = f"secret@{SERVICE}"
    create(alice, secret, "alice", **{"muc#roomconfig_membersonly": True,
                                      "muc#roomconfig_passwordprotectedroom": True,
                                      "muc#roomconfig_roomsecret": "sesame"})
    features = {f.get("var") for f in iq(carol, f"<query xmlns='{DISCO_INFO}'/>", to=secret)
                .xml.iter(f"{{{DISCO_INFO}}}feature")}
    assert {"muc_membersonly", "muc_passwordprotected"} <= features
    assert join_error(carol, secret, "carol", password="sesame") == "registration-required"
    admin(alice, secret, item(jid="carol@example.org", affiliation="member"))
    assert join_error(carol, secret, "carol") == "not-authorized"
    assert join_error(carol, secret, "carol", password="wrong") == "not-authorized"
    presence, *_ = join(carol, secret, "carol", password="sesame")
    assert presence["muc"]["affiliation"] == "member"
    members = admin(alice, secret, item(affiliation="member"), type="get")
    assert [i.get("jid") for i in members.xml.iter(f"{{{MUC_ADMIN}}}item")] == ["carol@example.org"]
    admin(alice, secret, item(jid="carol@example.org", affiliation="none"))  # §9.4: out (321)
    assert 321 in codes(presence_of(carol, secret, "carol", "unavailable"))


def test_invitations_and_persistent_room_across_restart(xmpp_server, xmpp_client):
    """§7.8.2 mediated invitations and declines; a persistent room keeps its configuration,
    affiliations, subject and history across a restart of the server."""
    server = xmpp_server(ACCOUNTS)
    alice, bob, carol = (client(xmpp_client, server, n) for n in ("alice", "bob", "carol"))
    create(alice, ROOM, "alice", **{"muc#roomconfig_persistentroom": True,
                                    "muc#roomconfig_membersonly": True,
                                    "muc#roomconfig_roomname": "Lobby"})
    alice.call(lambda: alice.xmpp.plugin["xep_0045"].invite(ROOM, "bob@example.org", "join us"))
    invite = bob.next("groupchat_invite")
    assert invite["from"] == ROOM and invite["muc"]["invite"]["from"] == "alice@example.org"
    assert invite["muc"]["invite"]["reason"] == "join us"
    join(bob, ROOM, "bob")  # the invitation made him a member of the members-only room
    alice.call(lambda: alice.xmpp.plugin["xep_0045"].invite(ROOM, "carol@example.org"))
    carol.next("groupchat_invite")
    carol.call(lambda: carol.xmpp.plugin["xep_0045"].decline(ROOM, "alice@example.org", "busy"))
    # slixmpp 1.8 raises groupchat_decline only for a room keyed like a pfrom: read the message
    decline = alice.next("message", match=lambda m: m["from"] == ROOM and m["muc"]["decline"]["from"])
    assert decline["muc"]["decline"]["from"] == "carol@example.org"
    assert decline["muc"]["decline"]["reason"] == "busy"
    groupchat(alice, ROOM, subject="Persistent")
    for n in range(3):
        groupchat(bob, ROOM, f"before restart {n}")
    said(alice, ROOM, "bob", "before restart 2")
    admin(alice, ROOM, item(jid="dave@example.org", affiliation="outcast"))

    server.restart()
    alice, bob, dave = (client(xmpp_client, server, n) for n in ("alice", "bob", "dave"))
    presence, subject, _, history = join(bob, ROOM, "bob")  # no 201: the room exists
    assert 201 not in codes(presence) and presence["muc"]["affiliation"] == "member"
    assert subject["subject"] == "Persistent"
    assert [m["body"] for m in history] == [f"before restart {n}" for n in range(3)]
    assert join_error(dave, ROOM, "dave") == "forbidden"  # still banned
    info = iq(bob, f"<query xmlns='{DISCO_INFO}'/>", to=ROOM).xml.find(f"{{{DISCO_INFO}}}query")
    assert info.find(f"{{{DISCO_INFO}}}identity").get("name") == "Lobby"
    assert "muc_membersonly" in {f.get("var") for f in info.iter(f"{{{DISCO_INFO}}}feature")}
    _, _, _, history = join(alice, ROOM, "alice", seconds=3600)  # §7.2.14 by age
    assert [m["body"] for m in history] == [f"before restart {n}" for n in range(3)]
    # a room no longer persistent is gone once empty
    configure(alice, ROOM, **{"muc#roomconfig_persistentroom": False})
    for c in (alice, bob):
        c.call(lambda c=c: c.xmpp.plugin["xep_0045"].leave_muc(ROOM, c.jid.split("@")[0]))
    presence_of(alice, ROOM, "alice", "unavailable")
    presence_of(bob, ROOM, "bob", "unavailable")
    with pytest.raises(IqError) as failed:
        iq(alice, f"<query xmlns='{DISCO_INFO}'/>", to=ROOM)
    assert condition(failed.value) == "item-not-found"


@needs_sipp
def test_sip_phone_and_http_api_take_part_in_a_room(convergence_server, xmpp_client, tmp_path):
    """Beyond the anchors (docs/xmpp.md "Group chat"): a registered phone's MESSAGE to
    sip:room@conference.<domain> is posted under its username; the room's messages reach it as
    MESSAGEs from the room, "nick: text"; ``/leave`` leaves. POST /api/messages posts as the user."""
    from actors import PHONE_PASSWORD, SIP, Phone
    server = convergence_server({**ACCOUNTS, "sipuserf": PHONE_PASSWORD}, sip=SIP)
    alice = client(xmpp_client, server, "alice")
    create(alice, ROOM, "alice")
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(server.sip_port, folder))
    phone.register()
    incoming = phone.receive()

    def send(body: str, expect: int = 200) -> str:
        def message(cseq, auth):
            return request("MESSAGE", cseq, f"sip:lobby@{SERVICE}", auth=auth, body=body,
                           content_type="text/plain;charset=UTF-8", sender="sipuserf",
                           recipient="lobby", domain=server.domain)
        return phone.sipp.run(phone._name("room"), message(1, False) + '  <recv response="407" auth="true"/>\n'
                              + message(2, True) + f'  <recv response="{expect}"/>\n',
                              user="sipuserf", password=PHONE_PASSWORD)

    send("hello from the phone")
    assert presence_of(alice, ROOM, "sipuserf")["muc"]["role"] == "participant"
    said(alice, ROOM, "sipuserf", "hello from the phone")
    groupchat(alice, ROOM, "hello phone")
    log = incoming()
    assert f"From: <sip:lobby@{SERVICE}>" in log and "alice: hello phone" in log

    # the HTTP API posts as its user (who joins under the username like the phone)
    answer = call(server, "POST", "/api/messages", {"to": ROOM, "body": "from the web"}, user="bob")
    assert answer.status == 200 and answer.json["outcome"] == "delivered"
    said(alice, ROOM, "bob", "from the web")

    send("/leave")
    presence_of(alice, ROOM, "sipuserf", "unavailable")
    # a members-only room refuses the phone like any non-member (registration-required: 400)
    configure(alice, ROOM, **{"muc#roomconfig_membersonly": True})
    log = send("let me in", expect=400)
    assert "members only" in log


def test_limits_and_bad_input(xmpp_server, xmpp_client):
    """Rooms per user, occupants per room, oversized messages, bad forms, unknown rooms: each
    refused with the XEP's condition while the room keeps serving."""
    server = xmpp_server(ACCOUNTS, muc_max_rooms_per_user=2, muc_max_occupants=2)
    alice, bob, carol = (client(xmpp_client, server, n) for n in ("alice", "bob", "carol"))
    create(alice, ROOM, "alice")
    create(alice, f"two@{SERVICE}", "alice")
    assert join_error(alice, f"three@{SERVICE}", "alice") == "resource-constraint"
    join(bob, ROOM, "bob")
    assert join_error(carol, ROOM, "carol") == "service-unavailable"  # muc_max_occupants
    with pytest.raises(IqError) as failed:  # above the server's ceiling
        configure(alice, ROOM, **{"muc#roomconfig_maxusers": "3"})
    assert condition(failed.value) == "not-acceptable"
    with pytest.raises(IqError) as failed:
        configure(alice, ROOM, **{"muc#roomconfig_whois": "everybody"})
    assert condition(failed.value) == "not-acceptable"
    with pytest.raises(IqError) as failed:  # only owners see the form
        iq(bob, f"<query xmlns='{MUC_OWNER}'/>", to=ROOM)
    assert condition(failed.value) == "forbidden"
    with pytest.raises(IqError) as failed:
        iq(carol, f"<query xmlns='{DISCO_INFO}'/>", to=f"nowhere@{SERVICE}")
    assert condition(failed.value) == "item-not-found"
    carol.send_message(f"nowhere@{SERVICE}", "hello?", type="groupchat")
    assert error_of(carol, f"nowhere@{SERVICE}") == "item-not-found"
    groupchat(bob, ROOM, "x" * 70000)  # more than a phone could carry ([sip] max_message_size)
    assert error_of(bob, ROOM) == "policy-violation"
    with pytest.raises(IqError) as failed:  # a kick without a nick
        admin(alice, ROOM, item(role="none"))
    assert condition(failed.value) == "bad-request"
    with pytest.raises(IqError) as failed:
        admin(alice, ROOM, item(jid="bob@example.org", affiliation="emperor"))
    assert condition(failed.value) == "bad-request"
    groupchat(bob, ROOM, "still here")
    said(alice, ROOM, "bob", "still here")
