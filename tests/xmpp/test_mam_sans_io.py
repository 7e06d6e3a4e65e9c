"""The message archive's parsing and paging without a server: RSM (XEP-0059), the query form,
XEP-0082 dates and preferences (XEP-0313), stanza-id stripping (XEP-0359), and the store's
paging on the test database (SQLite, or PostgreSQL with --convergence-database)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest

from convergence import Address, Message
from convergence.plugins.xmpp import archive_store as store, mam, rsm, stanza_ids as archive
from convergence.plugins.xmpp.messages import XmppMessage
from convergence.plugins.xmpp.stanzas import StanzaError

RSM = rsm.RSM


def query(xml: str) -> ET.Element:
    return ET.fromstring(f"<query xmlns='{mam.MAM}'>{xml}</query>")


def form(*fields, form_type=mam.MAM) -> ET.Element:
    values = "".join(f"<field var='{name}'>" + "".join(f"<value>{v}</value>" for v in
                     (value if isinstance(value, list) else [value])) + "</field>"
                     for name, value in fields)
    kind = f"<field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>" if form_type else ""
    return ET.fromstring(f"<x xmlns='jabber:x:data' type='submit'>{kind}{values}</x>")


def test_rsm_parse_caps_and_rejects():
    assert rsm.parse(None, 50, 50) == rsm.Page(50)
    assert rsm.parse(query(""), 20, 50) == rsm.Page(20)
    assert rsm.parse(query(f"<set xmlns='{RSM}'><max>10</max><after>x</after></set>"), 50, 50) \
        == rsm.Page(10, after="x")
    assert rsm.parse(query(f"<set xmlns='{RSM}'><max>99999999999</max></set>"), 50, 50).max == 50
    assert rsm.parse(query(f"<set xmlns='{RSM}'><before/></set>"), 50, 50) == rsm.Page(50, before="")
    assert rsm.parse(query(f"<set xmlns='{RSM}'><index>3</index></set>"), 50, 50).index == 3
    for bad in ("<max>-1</max>", "<max>ten</max>", "<max>1" + "0" * 30 + "</max>", "<index>x</index>",
                "<after>a</after><before>b</before>", "<after/>", "<index>1</index><after>a</after>"):
        with pytest.raises(rsm.RsmError):
            rsm.parse(query(f"<set xmlns='{RSM}'>{bad}</set>"), 50, 50)


def test_rsm_render():
    page = rsm.render("a", "b", 4, 10)
    assert page.find(f"{{{RSM}}}first").get("index") == "4"
    assert [c.text for c in page] == ["a", "b", "10"]
    empty = rsm.render(None, None, None, 0)  # XEP-0059 §2.6: only the count
    assert [c.tag.rpartition("}")[2] for c in empty] == ["count"]


def test_datetimes():
    assert mam.parse_datetime("2026-12-05T03:20:50Z") == datetime(2026, 12, 5, 3, 20, 50)
    assert mam.parse_datetime("2026-12-05T05:20:50.1234567+02:00") == datetime(2026, 12, 5, 3, 20, 50, 123456)
    assert mam.parse_datetime("2026-12-04T23:20:50-04:00") == datetime(2026, 12, 5, 3, 20, 50)
    for bad in ("2026-12-05", "2026-12-05T03:20:50", "2026-13-05T03:20:50Z", "2026-12-05T03:20:61Z",
                "yesterday", "2026-12-05T03:20:50+25:00", "2026-12-05T03:20:50Z" + " " * 100,
                "9" * 10000):
        with pytest.raises(ValueError):
            mam.parse_datetime(bad)
    assert mam.format_datetime(datetime(2026, 1, 2, 3, 4, 5, 6)) == "2026-01-02T03:04:05.000006Z"


def test_query_form():
    where = mam.parse_form(form(("with", "Bob@Example.org"), ("start", "2026-12-05T00:00:00Z"),
                                ("ids", ["a", "b"]), ("after-id", "x"), ("before-id", "y")))
    assert (where.with_jid, where.start, where.ids, where.after_id, where.before_id) == \
        ("bob@example.org", datetime(2026, 12, 5), ["a", "b"], "x", "y")
    assert mam.parse_form(form(("with", "bob@example.org/phone"), form_type=None)).with_jid == \
        "bob@example.org/phone"
    assert mam.parse_form(None) == store.Filter()
    for bad in (form(("colour", "red")), form(("start", "soon")), form(("with", "a@b@c")),
                form(("with", "")), form(("start", ["2026-12-05T00:00:00Z"] * 2)),
                form(("with", "a@b"), ("with", "c@d")), form(form_type="urn:xmpp:mam:1"),
                form(("ids", [str(i) for i in range(mam.MAX_IDS + 1)]))):
        with pytest.raises(StanzaError) as info:
            mam.parse_form(bad)
        assert info.value.condition == "bad-request"
    typed = form()
    typed.set("type", "form")
    with pytest.raises(StanzaError):
        mam.parse_form(typed)
    fields = [f.get("var") for f in mam.query_form()]
    assert fields == ["FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"]


def test_prefs():
    element = ET.fromstring(f"<prefs xmlns='{mam.MAM}' default='roster'><always><jid>A@x/r</jid>"
                            "</always><never><jid>b@x</jid><jid>b@x</jid></never></prefs>")
    prefs = mam.parse_prefs(element)
    assert prefs == store.Prefs("roster", ("a@x",), ("b@x",))
    assert mam.parse_prefs(mam.prefs_element(prefs)) == prefs
    for bad in ("default='sometimes'", "default='always'><never><jid>@@</jid></never"):
        with pytest.raises(StanzaError):
            mam.parse_prefs(ET.fromstring(f"<prefs xmlns='{mam.MAM}' {bad}></prefs>"))
    never = store.Prefs("always", (), ("b@x",))
    assert not never.decide("b@x", lambda: True) and never.decide("c@x", lambda: False)
    roster = store.Prefs("roster", ("a@x",), ())
    assert roster.decide("a@x", lambda: False) and roster.decide("c@x", lambda: True)
    assert not roster.decide("c@x", lambda: False)
    assert not store.Prefs("never").decide("a@x", lambda: True)


def test_stanza_ids_claiming_us_are_removed_and_what_is_archived():
    sid = "{urn:xmpp:sid:0}stanza-id"
    ours = ET.Element(sid, by="bob@example.org", id="forged")
    domain = ET.Element(sid, by="example.org", id="forged")
    theirs = ET.Element(sid, by="room@muc.other.net", id="kept")
    origin = ET.Element("{urn:xmpp:sid:0}origin-id", id="o")
    assert archive.without_our_ids((ours, domain, theirs, origin), "example.org") == (theirs, origin)
    a, b = Address("alice", "example.org", "pc"), Address("bob", "example.org")
    assert archive.archivable(Message(a, b, "hi", type="chat"))
    assert not archive.archivable(Message(a, b, "", type="chat"))  # a chat state alone
    assert not archive.archivable(Message(a, b, "hi", type="headline"))
    assert not archive.archivable(Message(a, b, "hi", type="groupchat"))
    hint = ET.Element("{urn:xmpp:hints}no-permanent-store")
    assert not archive.archivable(XmppMessage(a, b, "hi", type="chat", extensions=(hint,)))
    first = XmppMessage(a, b, "hi", type="chat", id="client-id")
    assert first.stanza_id != first.id and first.reply().stanza_id != first.stanza_id


def test_store_paging(core):
    core.add_account("alice", "a")
    core.add_account("bob", "b")
    start = datetime(2026, 1, 1, 23, 59, 58, 123456)  # written as microseconds, kept to the microsecond
    def item(owner, stanza_id, peer, peer_bare, when, message_id, stanza):  # received by ``owner``
        return store.Item(stanza_id, store.timestamp(when), message_id, stanza, None, peer, peer_bare,
                          owner, f"{owner}@example.org", f"{owner}@example.org")

    items = [item("alice", f"id{i}", "bob@example.org/pc" if i % 2 else "carol@example.org",
                  "bob@example.org" if i % 2 else "carol@example.org", start + timedelta(minutes=i),
                  f"m{i}", f"<message xmlns='jabber:client'><body>{i}</body></message>")
             for i in range(10)]
    items.append(item("nobody", "x", "a@b", "a@b", start, "m", "<message/>"))  # not an account
    assert store.append(core.db, items, lambda account, peer: False) == 10

    def ids(where=store.Filter(), size=3, **rsm_args):
        entries, count, first, complete = store.query(core.db, "alice", where, size, **rsm_args)
        return [e.stanza_id for e in entries], count, first, complete

    assert ids() == (["id0", "id1", "id2"], 10, 0, False)
    assert ids(after="id2") == (["id3", "id4", "id5"], 10, 3, False)
    assert ids(after="id6") == (["id7", "id8", "id9"], 10, 7, True)
    assert ids(before="") == (["id7", "id8", "id9"], 10, 7, False)
    assert ids(before="id3") == (["id0", "id1", "id2"], 10, 0, True)
    assert ids(index=8) == (["id8", "id9"], 10, 8, True)
    assert ids(store.Filter(with_jid="bob@example.org"), 10) == (["id1", "id3", "id5", "id7", "id9"], 5, 0, True)
    assert ids(store.Filter(with_jid="bob@example.org/pc"), 1)[:2] == (["id1"], 5)
    assert ids(store.Filter(with_jid="bob@example.org/phone")) == ([], 0, 0, True)
    assert ids(store.Filter(start=start + timedelta(minutes=4), end=start + timedelta(minutes=5)))[0] == ["id4", "id5"]
    assert ids(store.Filter(ids=["id9", "id2", "nope"]))[0] == ["id2", "id9"]
    assert ids(store.Filter(after_id="id4", before_id="id8"), 10)[0] == ["id5", "id6", "id7"]
    for bad in ({"after": "nope"}, {"before": "nope"}):
        with pytest.raises(store.UnknownId):
            ids(**bad)
    with pytest.raises(store.UnknownId):
        ids(store.Filter(after_id="nope"))
    assert store.query(core.db, "bob", store.Filter(), 5) == ([], 0, 0, True)
    assert store.stanza_id_of(core.db, "alice", "bob@example.org", "m3") == "id3"
    first, last = store.bounds(core.db, "alice")
    assert (first.stanza_id, last.stanza_id) == ("id0", "id9")
    assert (first.created_at, last.created_at) == (start, start + timedelta(minutes=9))
    assert abs(store.now() - store.timestamp(datetime.utcnow())) < 1_000_000
    assert store.bounds(core.db, "bob") == (None, None)
    # preferences: never for bob, the roster default asks the roster
    store.set_prefs(core.db, "alice", store.Prefs("roster", (), ("bob@example.org",)))
    assert store.get_prefs(core.db, "alice") == store.Prefs("roster", (), ("bob@example.org",))
    assert store.get_prefs(core.db, "bob") == store.Prefs()
    more = [item("alice", f"p{i}", jid, jid, start, "m", "<message/>")
            for i, jid in enumerate(("bob@example.org", "dave@example.org", "erin@example.org"))]
    asked = []
    assert store.append(core.db, more, lambda account, peer: asked.append(peer) or peer == "dave@example.org") == 1
    assert asked == ["dave@example.org", "erin@example.org"]
    assert store.purge(core.db, start + timedelta(minutes=5)) == 5 + 1  # id0..id4 and p1
    assert ids(size=50)[1] == 5


def test_a_conversation_is_archived_in_order_in_both_archives(core):
    """Each message is one item, the database makes its rows (the sender's, then the recipient's):
    both archives list the conversation in the order it happened, a message to oneself is one row,
    names that are not accounts (a service user, a deleted account) get none."""
    core.add_account("alice", "a")
    core.add_account("bob", "b")
    jid = {name: f"{name}@example.org" for name in ("alice", "bob", "echo", "gone")}
    when = store.timestamp(datetime(2026, 1, 1))

    def item(n, sender, recipient):
        return store.Item(f"s{n}", when, f"m{n}", f"<message><body>{n}</body></message>", sender,
                          jid[sender] + "/pc", jid[sender], recipient, jid[recipient], jid[recipient])

    items = [item(1, "alice", "bob"), item(2, "bob", "alice"), item(3, "alice", "echo"),
             item(4, "gone", "bob"), item(5, "bob", "alice"), item(6, "alice", "bob")]
    items.append(store.Item("s7", when, "m7", "<message/>", "alice", jid["alice"], jid["alice"], None,
                            jid["alice"], jid["alice"]))  # to oneself: the archive's observe gives one owner
    assert store.append(core.db, items, lambda *_: True) == 11
    assert store.append(core.db, items[:2] + [item(8, "bob", "alice")], lambda *_: True) == 2  # once each

    def archive(account):
        entries = store.query(core.db, account, store.Filter(), 50)[0]
        return [e.stanza_id for e in entries]

    assert archive("alice") == ["s1", "s2", "s3", "s5", "s6", "s7", "s8"]
    assert archive("bob") == ["s1", "s2", "s4", "s5", "s6", "s8"]
    bob_with = store.query(core.db, "bob", store.Filter(with_jid=jid["gone"]), 5)[0]
    assert [e.stanza_id for e in bob_with] == ["s4"]


def test_a_delivered_message_is_written_as_its_element_would_be(core):
    """``messages.stanza`` writes a delivered <message/> without building its element (the hot
    path): byte for byte what serializing ``messages.element`` gives, escaping and the stanza id
    (XEP-0359) included; errors and delay stamps take the element's own path."""
    from convergence.plugins.xmpp import messages
    from convergence.plugins.xmpp.stream import serialize

    service = core.pm.get_plugin("xmpp:server").service
    chat_state = ET.fromstring("<active xmlns='http://jabber.org/protocol/chatstates'/>")
    chat_state.tail = "\n  "  # a client's indentation between payloads is kept
    oob = ET.fromstring("<x xmlns='jabber:x:oob'><url>https://a.example/b?c&amp;d</url></x>")
    alice, bob = Address("alice", service.domain, "pc"), Address("bob", service.domain)
    cases = [
        XmppMessage(alice, bob.with_resource("phone"), "hi <&> '\" there", type="chat"),
        XmppMessage(bob.with_resource("it's <me>"), alice, "x", subject="s", thread="t",
                    extensions=(chat_state, oob), id="an 'id'", stanza_id="q'"),
        XmppMessage(alice, Address.from_jid("carol@elsewhere.example"), "", extensions=(chat_state,)),
        XmppMessage(alice, bob, "", type="chat"),  # nothing inside: an empty element
        XmppMessage(alice, bob, "stored", type="chat", stamp=datetime(2026, 1, 1)),
        XmppMessage(alice, bob, "why").failed("recipient-unavailable", "gone"),
    ]
    for message in cases:
        assert messages.stanza(service, message) == serialize(messages.element(service, message)), message
    assert f"<stanza-id xmlns='urn:xmpp:sid:0' by='alice@{service.domain}' id='q&apos;'/>".encode() \
        in messages.stanza(service, cases[1])
    with pytest.raises(ValueError):  # a character XML cannot carry, as the serializer says
        messages.stanza(service, XmppMessage(alice, bob, "bell \x07", type="chat"))


def test_while_messages_keep_coming_each_archive_batch_waits_the_write_delay(make_core, monkeypatch):
    """Messages that arrive while a batch is written wait ``archive_write_delay`` for more instead
    of being written at once: under load each batch holds what came in one delay, not only what
    came during the last write (SQLite's cost per row falls as batches grow)."""
    import time

    delay = 0.2
    core = make_core({"xmpp": {"archive_write_delay": delay}})
    archive = core.pm.get_plugin("xmpp:server").service.archive
    core.add_account("alice", "a")
    core.add_account("bob", "b")
    alice, bob = core.address("alice", "pc"), core.address("bob", "phone")
    writes = []

    def append(db, items, in_roster, writer=None):
        writes.append((time.monotonic(), len(items)))
        if len(writes) == 1:  # two more arrive while this batch is being written
            for n in range(2):
                archive.observe(XmppMessage(bob, alice, f"during {n}", type="chat"))
        return 2 * len(items)

    monkeypatch.setattr(store, "append", append)
    for n in range(3):
        archive.observe(XmppMessage(alice, bob, f"first {n}", type="chat"))
    writer = archive._writer
    assert writer is not None
    writer.join(timeout=10)  # it writes both batches, then ends
    assert [size for _, size in writes] == [3, 2]
    assert writes[1][0] - writes[0][0] >= delay  # not at once after the first write
