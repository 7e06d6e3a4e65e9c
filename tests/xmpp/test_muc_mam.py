"""Message Archive Management on group chat rooms (XEP-0313 on XEP-0045 rooms, XEP-0359 stanza
ids by the room): stock slixmpp clients (xep_0045, xep_0313) over STARTTLS — a late joiner pages
through a persistent room's archive, filters, the stanza ids of the live messages, the join
history and the archive agree, who may read a members-only room's archive, a temporary room is not
archived, the archive across a restart — and, without a server, the room's rendering and the
store's paging and retention on the test database (SQLite, or PostgreSQL)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from convergence import Address
from convergence.plugins.xmpp import archive_store, muc_mam, muc_store
from convergence.plugins.xmpp.muc import History, HistoryEntry, Room, RoomConfig

from .roster_client import iq
from .test_mam import DISCO, MAM, SID, archiving, bodies, error_of, query, rsm_of
from .test_muc import ACCOUNTS, ROOM, admin, create, groupchat, item, join, said

CLIENT = "jabber:client"
MUC_USER = "http://jabber.org/protocol/muc#user"


def client(xmpp_client, server, name: str):
    """A MUC client (as test_muc's) that also collects MAM results (as test_mam's)."""
    c = archiving(xmpp_client, server, name, plugins=("xep_0004", "xep_0045", "xep_0082",
                                                      "xep_0203", "xep_0059", "xep_0313"))
    for event in ("groupchat_message", "groupchat_subject", "groupchat_presence"):
        c._watch(event)
    return c


def room_ids(message) -> list[tuple[str, str]]:
    return [(s.get("by"), s.get("id")) for s in message.xml.findall(f"{{{SID}}}stanza-id")]


def features(c, to: str) -> set[str]:
    return {f.get("var") for f in iq(c, f"<query xmlns='{DISCO}'/>", to=to).xml.iter(f"{{{DISCO}}}feature")}


def test_late_joiner_pages_through_the_room_archive(xmpp_server, xmpp_client):
    """Live messages carry the room's stanza id; a late joiner gets the last 3 in its history
    (the room's window) and all 8 from the archive, page by page, with the same ids; filters;
    the results come from the room; a temporary room has no archive; who may read an open room."""
    server = xmpp_server(ACCOUNTS, mam_max_page=5)
    alice, bob, carol, dave = (client(xmpp_client, server, n) for n in ("alice", "bob", "carol", "dave"))
    create(alice, ROOM, "alice", **{"muc#roomconfig_persistentroom": True, "muc#maxhistoryfetch": "3"})
    assert {MAM, MAM + "#extended", SID} <= features(alice, ROOM)
    join(bob, ROOM, "bob")
    live = []
    for n in range(8):
        sender, nick = (alice, "alice") if n % 2 else (bob, "bob")
        # a stanza id a sender made up in the room's name is not passed on (XEP-0359 §3.1)
        def spoof(sender=sender, n=n):
            message = sender.xmpp.make_message(mto=ROOM, mbody=f"m{n}", mtype="groupchat")
            message.xml.append(ET.fromstring(f"<stanza-id xmlns='{SID}' by='{ROOM}' id='fake{n}'/>"))
            message.send()
        sender.call(spoof)
        copies = [said(c, ROOM, nick, f"m{n}") for c in (alice, bob)]
        ids = {tuple(room_ids(m)) for m in copies}
        assert len(ids) == 1 and len(next(iter(ids))) == 1, ids  # one id, the same in every copy
        [(by, sid)] = next(iter(ids))
        assert by == ROOM and not sid.startswith("fake")
        live.append(sid)
    assert len(set(live)) == 8

    _, _, _, history = join(carol, ROOM, "carol")  # history: the room's window only
    assert [m["body"] for m in history] == ["m5", "m6", "m7"]
    assert [room_ids(m) for m in history] == [[(ROOM, sid)] for sid in live[5:]]

    # slixmpp's own MAM client pages through the room's archive (3 pages of 3)
    async def stock():
        return [m["mam_result"]["id"] async for m in
                carol.xmpp.plugin["xep_0313"].iterate(jid=ROOM, rsm={"max": 3})]
    assert carol.call(stock) == live

    found, fin = query(carol, to=ROOM)  # mam_max_page=5: the first page of 5
    assert bodies(found) == [f"m{n}" for n in range(5)] and rsm_of(fin) == (False, "8", "0")
    assert [f[0] for f in found] == live[:5]
    message = found[1][1]
    assert (message.get("from"), message.get("type")) == (f"{ROOM}/alice", "groupchat")
    assert message.find(f"{{{MUC_USER}}}x") is None  # a semi-anonymous room: no real JID
    assert [(s.get("by"), s.get("id")) for s in message.findall(f"{{{SID}}}stanza-id")] == [(ROOM, live[1])]
    found, fin = query(carol, rsm={"after": live[4]}, to=ROOM)
    assert bodies(found) == ["m5", "m6", "m7"] and rsm_of(fin) == (True, "8", "5")
    found, fin = query(carol, rsm={"max": 2, "before": ""}, to=ROOM)  # the last page
    assert bodies(found) == ["m6", "m7"]
    found, _ = query(carol, {"with": f"{ROOM}/bob"}, to=ROOM)
    assert bodies(found) == ["m0", "m2", "m4", "m6"]
    assert query(carol, {"with": server.jid("bob")}, to=ROOM)[0] == []
    stamp = found[1][2]
    assert bodies(query(carol, {"start": stamp, "end": stamp}, to=ROOM)[0]) == ["m2"]
    assert bodies(query(carol, {"ids": [live[7], live[3]]}, to=ROOM)[0]) == ["m3", "m7"]
    assert bodies(query(carol, {"after_id": live[2], "before_id": live[5]}, to=ROOM)[0]) == ["m3", "m4"]
    assert error_of(lambda: query(carol, rsm={"after": "nope"}, to=ROOM)) == "item-not-found"
    assert error_of(lambda: query(carol, {"start": "yesterday"}, to=ROOM)) == "bad-request"
    # the results came from the room, and only carol's own archive is the server's
    assert query(carol)[0] == []
    # an open room: who may enter may read, without being in it
    assert bodies(query(dave, rsm={"max": 1}, to=ROOM)[0]) == ["m0"]
    admin(alice, ROOM, item(jid="dave@example.org", affiliation="outcast"))
    assert error_of(lambda: query(dave, to=ROOM)) == "forbidden"

    # a temporary room: no stanza ids, no archive
    temporary = f"chat@{ROOM.split('@')[1]}"
    create(alice, temporary, "alice")
    assert MAM not in features(alice, temporary)
    groupchat(alice, temporary, "not kept")
    assert room_ids(said(alice, temporary, "alice", "not kept")) == []
    assert error_of(lambda: query(alice, to=temporary)) == "service-unavailable"


def test_members_only_room_archive_restart_retention_and_switch(xmpp_server, xmpp_client):
    """A members-only room's archive is for its members (an occupant or not); others are
    forbidden; a non-anonymous room shows real JIDs. The archive, and the ids, survive a restart;
    retention (run at start) removes old messages; with ``archive = false`` rooms have none."""
    server = xmpp_server(ACCOUNTS, archive_retention=1)
    alice, bob, carol = (client(xmpp_client, server, n) for n in ("alice", "bob", "carol"))
    create(alice, ROOM, "alice", **{"muc#roomconfig_persistentroom": True,
                                    "muc#roomconfig_membersonly": True,
                                    "muc#roomconfig_whois": "anyone"})
    admin(alice, ROOM, item(jid="bob@example.org", affiliation="member"))
    live = []
    for n in range(3):
        groupchat(alice, ROOM, f"secret {n}")
        live.append(room_ids(said(alice, ROOM, "alice", f"secret {n}"))[0][1])
    assert error_of(lambda: query(carol, to=ROOM)) == "forbidden"  # neither member nor occupant
    found, _ = query(bob, to=ROOM)  # a member, not in the room
    assert bodies(found) == [f"secret {n}" for n in range(3)] and [f[0] for f in found] == live
    shown = found[0][1].find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    assert shown is not None and shown.get("jid") == "alice@example.org"  # non-anonymous

    old = datetime.utcnow() - timedelta(days=2)
    muc_store.add_history(server._core.db, "lobby", HistoryEntry("alice", "alice@example.org", old,
                                                                 "ancient", stanza_id="old-one"), None)
    server.restart()  # retention runs at start: "ancient" is gone
    alice, bob, carol = (client(xmpp_client, server, n) for n in ("alice", "bob", "carol"))
    _, _, _, history = join(bob, ROOM, "bob")
    assert [room_ids(m)[0][1] for m in history] == live
    groupchat(bob, ROOM, "after restart")
    live.append(room_ids(said(bob, ROOM, "bob", "after restart"))[0][1])
    found, fin = query(bob, to=ROOM)
    assert [f[0] for f in found] == live and rsm_of(fin) == (True, "4", "0")
    assert error_of(lambda: query(carol, to=ROOM)) == "forbidden"

    server.config["xmpp"]["archive"] = False  # the switch: no ids, no queries, not advertised
    server.restart()
    bob = client(xmpp_client, server, "bob")
    join(bob, ROOM, "bob")
    groupchat(bob, ROOM, "not archived")
    assert room_ids(said(bob, ROOM, "bob", "not archived")) == []
    assert error_of(lambda: query(bob, to=ROOM)) == "service-unavailable"
    assert MAM not in features(bob, ROOM)


# ---- without a server --------------------------------------------------------------------------
def test_room_stamps_broadcast_and_history_with_its_stanza_id():
    alice, bob = Address("alice", "example.org", "pc"), Address("bob", "example.org", "pc")
    room = Room(Address("lobby", "conference.example.org"), RoomConfig(persistent=True),
                {alice.bare: "owner"})
    now = datetime(2026, 1, 1)
    room.join(alice, "alice", None, None, History(), now, created=True)
    room.join(bob, "bob", None, None, History(), now)
    out, entry = room.groupchat(alice, "hi", None, [], "m1", now, "sid-1")
    assert entry.stanza_id == "sid-1" and len(out) == 2
    for _, element in out:
        [sid] = element.findall(f"{{{SID}}}stanza-id")
        assert (sid.get("by"), sid.get("id")) == ("lobby@conference.example.org", "sid-1")
    out, entry = room.groupchat(alice, "", None, [], "m2", now, "sid-2")  # nothing kept: no id
    assert entry is None and all(e.find(f"{{{SID}}}stanza-id") is None for _, e in out)
    archived = room.archived_message(HistoryEntry("alice", "alice@example.org", now, "hi", stanza_id="s"), None)
    assert archived.get("from") == "lobby@conference.example.org/alice" and archived.get("to") is None
    assert archived.find(f"{{{MUC_USER}}}x") is None  # semi-anonymous, not a moderator
    moderator = room.by_jid[alice]
    assert room.archived_message(HistoryEntry("bob", "bob@example.org", now, "x"), moderator) \
        .find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item").get("jid") == "bob@example.org"
    # who may read (XEP-0313 §4 on rooms)
    carol = Address("carol", "example.org", "pc")
    assert muc_mam._may_read(room, bob) and muc_mam._may_read(room, carol)
    room.config = replace(room.config, members_only=True)
    assert muc_mam._may_read(room, bob) and not muc_mam._may_read(room, carol)
    room.affiliations[carol.bare] = "member"
    assert muc_mam._may_read(room, carol)
    room.config, room.affiliations[carol.bare] = replace(room.config, members_only=False), "outcast"
    assert not muc_mam._may_read(room, carol)


def test_room_archive_store_paging_and_retention(core):
    muc_store.save(core.db, "lobby", RoomConfig(persistent=True).to_dict(), "", "")
    start = datetime(2026, 1, 1)
    for n in range(6):
        muc_store.add_history(core.db, "lobby", HistoryEntry(
            "bob" if n % 2 else "alice", "x@example.org", start + timedelta(minutes=n), f"m{n}",
            stanza_id=f"s{n}"), None)  # an archived room keeps them all
    assert [e.body for e in muc_store.load(core.db, "lobby", 2)[4]] == ["m4", "m5"]  # join window

    def page(where=archive_store.Filter(), nick=None, size=4, **rsm_args):
        entries, count, first, complete = muc_store.archive_page(core.db, "lobby", where, nick, size, **rsm_args)
        return [e.stanza_id for e in entries], count, first, complete

    assert page() == (["s0", "s1", "s2", "s3"], 6, 0, False)
    assert page(after="s3") == (["s4", "s5"], 6, 4, True)
    assert page(before="", size=2) == (["s4", "s5"], 6, 4, False)
    assert page(nick="bob") == (["s1", "s3", "s5"], 3, 0, True)
    assert page(archive_store.Filter(after_id="s1"), nick="alice")[0] == ["s2", "s4"]
    with pytest.raises(archive_store.UnknownId):
        page(after="nope")
    assert muc_store.archive_page(core.db, "nowhere", archive_store.Filter(), None, 5) == ([], 0, 0, True)
    # without the archive the history keeps only the window
    muc_store.add_history(core.db, "lobby", HistoryEntry("alice", "x", start + timedelta(minutes=9), "w"), 3)
    assert [e.body for e in muc_store.load(core.db, "lobby", 10)[4]] == ["m4", "m5", "w"]
    assert page()[1] == 2  # the archive's rows that are left
    assert muc_store.purge(core.db, start + timedelta(minutes=5)) == 1  # m4
    assert page()[0] == ["s5"]
