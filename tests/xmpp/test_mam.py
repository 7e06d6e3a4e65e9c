"""Message Archive Management (XEP-0313 mam:2) with XEP-0359 stanza ids and XEP-0059 paging, over
STARTTLS with slixmpp: what is archived (from XMPP, a SIP phone, the HTTP API), queries, paging,
filters, preferences, bad input, retention, and no duplicates for a second device (carbons +
offline + MAM, ejabberd issue #1331)."""
from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

import pytest
from slixmpp.exceptions import IqError

from actors import ACCOUNTS, SIP, Phone
from api_client import call as api_call
from sipp_runner import Sipp, needs_sipp
from xmpp.roster_client import condition, iq

from convergence.plugins.xmpp import archive_store

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
FORWARD = "urn:xmpp:forward:0"
CLIENT = "jabber:client"
DISCO = "http://jabber.org/protocol/disco#info"
_queries = itertools.count(1)


def archiving(xmpp_client, server, name: str, resource: str = "test", **options):
    """A logged-in client that collects the MAM results it receives (``client.mam``, by queryid):
    an input filter, so they are in before the IQ result that ends the query is handled."""
    client = xmpp_client(server, name, resource=resource, **options)
    client.mam = {}

    def seen(stanza):
        result = stanza.xml.find(f"{{{MAM}}}result")
        if stanza.name == "message" and result is not None:
            client.mam.setdefault(result.get("queryid"), []).append(result)
        return stanza
    client.call(lambda: client.xmpp.add_filter("in", seen))
    return client


def form(**fields) -> str:
    if not fields:
        return ""
    values = "".join(f"<field var='{name.replace('_', '-')}'>"
                     + "".join(f"<value>{v}</value>" for v in (value if isinstance(value, list) else [value]))
                     + "</field>" for name, value in fields.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{MAM}</value></field>{values}</x>")


def page(**rsm) -> str:
    inner = "".join(f"<{k}>{v}</{k}>" if v != "" else f"<{k}/>" for k, v in rsm.items())
    return f"<set xmlns='{RSM}'>{inner}</set>" if rsm else ""


def query(client, fields=None, rsm=None, to=None, extra=""):
    """A MAM query: ([(archive id, forwarded <message/>, delay stamp)], <fin/>)."""
    queryid = f"q{next(_queries)}"
    result = iq(client, f"<query xmlns='{MAM}' queryid='{queryid}'>{form(**(fields or {}))}"
                        f"{page(**(rsm or {}))}{extra}</query>", "set", to)
    found = []
    for item in client.mam.pop(queryid, []):
        forwarded = item.find(f"{{{FORWARD}}}forwarded")
        found.append((item.get("id"), forwarded.find(f"{{{CLIENT}}}message"),
                      forwarded.find("{urn:xmpp:delay}delay").get("stamp")))
    return found, result.xml.find(f"{{{MAM}}}fin")


def bodies(found) -> list[str]:
    return [message.findtext(f"{{{CLIENT}}}body").strip() for _, message, _ in found]


def rsm_of(fin) -> tuple:
    first = fin.find(f"{{{RSM}}}set/{{{RSM}}}first")
    return (fin.get("complete") == "true", fin.findtext(f"{{{RSM}}}set/{{{RSM}}}count"),
            first.get("index") if first is not None else None)


def send(client, to: str, body: str, extra: str = "", type: str = "chat") -> None:
    def go():
        message = client.xmpp.make_message(mto=to, mbody=body, mtype=type)
        if extra:
            message.xml.append(ET.fromstring(f"<wrap>{extra}</wrap>")[0])
        message.send()
    client.call(go)


def stanza_ids(message) -> list[tuple[str, str]]:
    return [(s.get("by"), s.get("id")) for s in message.xml.findall(f"{{{SID}}}stanza-id")]


def receive(client, body: str, timeout: float = 5):
    """The next message with ``body`` (SIPp ends bodies with CRLF)."""
    return client.next("message", timeout, match=lambda m: m["body"].strip() == body)


def error_of(call) -> str:
    with pytest.raises(IqError) as info:
        call()
    return condition(info.value)


def test_archive_queries_paging_filters_and_stanza_ids(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "a", "bob": "b", "carol": "c"}, mam_max_page=5)
    alice, bob = archiving(xmpp_client, server, "alice"), archiving(xmpp_client, server, "bob")
    carol = archiving(xmpp_client, server, "carol")
    # a client cannot vouch for our ids (XEP-0359 §3.1): the forged one is replaced; origin-id stays
    forged = f"<stanza-id xmlns='{SID}' by='bob@{server.domain}' id='forged'/>"
    sids = []
    for i in range(7):
        send(alice, server.jid("bob", "test"), f"m{i}", f"<origin-id xmlns='{SID}' id='o{i}'/>" + (forged if i == 0 else ""))
        got = receive(bob, f"m{i}")
        (by, sid), = stanza_ids(got)
        assert by == server.jid("bob") and sid != "forged"
        assert got.xml.find(f"{{{SID}}}origin-id").get("id") == f"o{i}"
        sids.append(sid)
    send(carol, server.jid("bob"), "from carol")
    sids.append(stanza_ids(receive(bob, "from carol"))[0][1])
    assert len(set(sids)) == 8

    # the first page: max capped at mam_max_page (5); the archive ids are the stanza ids
    found, fin = query(bob, rsm={"max": 100000})
    assert bodies(found) == ["m0", "m1", "m2", "m3", "m4"] and [f[0] for f in found] == sids[:5]
    assert rsm_of(fin) == (False, "8", "0")
    assert found[0][1].get("from") == server.jid("alice", "test") and found[0][1].find(f"{{{SID}}}stanza-id") is None
    assert fin.findtext(f"{{{RSM}}}set/{{{RSM}}}last") == sids[4]
    found, fin = query(bob, rsm={"max": 5, "after": sids[4]})
    assert bodies(found) == ["m5", "m6", "from carol"] and rsm_of(fin) == (True, "8", "5")
    found, fin = query(bob, rsm={"max": 2, "before": ""})  # the last page
    assert bodies(found) == ["m6", "from carol"] and rsm_of(fin)[2] == "6"
    found, fin = query(bob, rsm={"max": 2, "before": sids[2]})
    assert bodies(found) == ["m0", "m1"] and rsm_of(fin) == (True, "8", "0")
    found, _ = query(bob, rsm={"max": 2, "before": ""}, extra="<flip-page/>")
    assert bodies(found) == ["from carol", "m6"]
    found, _ = query(bob, rsm={"index": 6})
    assert bodies(found) == ["m6", "from carol"]
    # filters: with (bare: every resource; full: that one), start/end, #extended ids and after/before-id
    assert bodies(query(bob, {"with": server.jid("carol")})[0]) == ["from carol"]
    assert query(bob, {"with": server.jid("alice", "test")})[1].findtext(f"{{{RSM}}}set/{{{RSM}}}count") == "7"
    assert query(bob, {"with": server.jid("alice", "elsewhere")})[0] == []
    stamp = found[0][2]
    assert bodies(query(bob, {"start": stamp})[0]) == ["m6", "from carol"]
    assert bodies(query(bob, {"end": stamp})[0]) == ["m0", "m1", "m2", "m3", "m4"]
    assert bodies(query(bob, {"start": stamp, "end": stamp})[0]) == ["m6"]
    assert bodies(query(bob, {"ids": [sids[5], sids[2]]})[0]) == ["m2", "m5"]
    assert bodies(query(bob, {"after_id": sids[2], "before_id": sids[5]})[0]) == ["m3", "m4"]
    # the sender's archive has its side of the conversation
    found, fin = query(alice, {"with": server.jid("bob")})
    assert bodies(found) == [f"m{i}" for i in range(5)] and rsm_of(fin)[1] == "7"
    assert [f[0] for f in found] == sids[:5]  # the same archive id in both archives

    # slixmpp's own MAM client (xep_0313 on xep_0059) pages through the whole archive
    async def stock():
        bob.xmpp.register_plugin("xep_0313")
        return [m["mam_result"]["id"] async for m in bob.xmpp.plugin["xep_0313"].iterate(rsm={"max": 3})]
    assert bob.call(stock) == sids

    # metadata (§6), the query form (§5.1.1), discovery (§8)
    metadata = iq(bob, f"<metadata xmlns='{MAM}'/>").xml.find(f"{{{MAM}}}metadata")
    assert [metadata.find(f"{{{MAM}}}{n}").get("id") for n in ("start", "end")] == [sids[0], sids[-1]]
    fields = iq(bob, f"<query xmlns='{MAM}'/>").xml.findall(".//{jabber:x:data}field")
    assert {"FORM_TYPE", "with", "start", "end", "ids", "before-id", "after-id"} == {f.get("var") for f in fields}
    for to in (server.jid("bob"), server.domain):
        info = iq(bob, f"<query xmlns='{DISCO}'/>", to=to).xml
        features = {f.get("var") for f in info.iter(f"{{{DISCO}}}feature")}
        assert {MAM, MAM + "#extended", SID} <= features, to


def test_bad_queries_and_preferences(xmpp_server, xmpp_client):
    server = xmpp_server({"alice": "a", "bob": "b", "carol": "c"})
    alice, bob = archiving(xmpp_client, server, "alice"), archiving(xmpp_client, server, "bob")
    carol = archiving(xmpp_client, server, "carol")
    send(alice, server.jid("bob"), "hello")
    (_, sid), = stanza_ids(receive(bob, "hello"))
    bad = {
        "forbidden": lambda: query(alice, to=server.jid("bob")),
        "bad-request": lambda: query(bob, {"colour": "red"}),
        "bad-request ": lambda: query(bob, {"start": "last tuesday"}),
        "bad-request  ": lambda: query(bob, {"with": "not@a@jid"}),
        "bad-request   ": lambda: query(bob, rsm={"max": "-1"}),
        "item-not-found": lambda: query(bob, rsm={"after": "no-such-id"}),
        "item-not-found ": lambda: query(bob, {"after_id": "no-such-id"}),
    }
    for expected, call in bad.items():
        assert error_of(call) == expected.strip(), expected
    assert error_of(lambda: iq(bob, f"<query xmlns='{MAM}' node='x'/>", "set")) == "item-not-found"
    assert error_of(lambda: iq(alice, f"<prefs xmlns='{MAM}'/>", to=server.jid("bob"))) == "forbidden"
    assert error_of(lambda: iq(bob, f"<prefs xmlns='{MAM}' default='sometimes'/>", "set")) == "bad-request"
    assert [f[0] for f in query(bob)[0]] == [sid]  # still serving

    # preferences (§7): never, except carol; stored, read back; alice still archives her side
    prefs = iq(bob, f"<prefs xmlns='{MAM}'/>").xml.find(f"{{{MAM}}}prefs")
    assert prefs.get("default") == "always"
    iq(bob, f"<prefs xmlns='{MAM}' default='never'><always><jid>{server.jid('carol')}</jid></always>"
            "<never/></prefs>", "set")
    prefs = iq(bob, f"<prefs xmlns='{MAM}'/>").xml.find(f"{{{MAM}}}prefs")
    assert (prefs.get("default"), prefs.findtext(f"{{{MAM}}}always/{{{MAM}}}jid")) == ("never", server.jid("carol"))
    send(alice, server.jid("bob"), "not kept")
    receive(bob, "not kept")
    send(carol, server.jid("bob"), "kept")
    receive(bob, "kept")
    assert bodies(query(bob)[0]) == ["hello", "kept"]
    assert bodies(query(alice)[0]) == ["hello", "not kept"]


def post_message(server, user: str, to: str, body: str) -> int:
    """POST /api/messages as ``user`` (HTTP Basic, docs/http-api.md); the status."""
    return api_call(server, "POST", "/api/messages", {"to": to, "body": body}, user=user).status


@needs_sipp
def test_messages_from_a_phone_the_http_api_and_echo_are_archived(convergence_server, xmpp_client, tmp_path):
    server = convergence_server(ACCOUNTS, sip=SIP)
    (tmp_path / "sipp").mkdir()
    phone = Phone(Sipp(server.sip_port, tmp_path / "sipp"))
    user = archiving(xmpp_client, server, "convergence")
    phone.send("convergence", "from the phone")
    from_phone = receive(user, "from the phone")
    assert post_message(server, "userc", server.jid("convergence"), "from http") == 200
    from_http = receive(user, "from http")
    send(user, server.jid("echo"), "ping the echo")
    echoed = receive(user, "ping the echo")
    found, _ = query(user)
    # the echo answers while its question is being routed: the answer may be archived first
    assert bodies(found) == ["from the phone", "from http", "ping the echo", "ping the echo"]
    assert len({f[0] for f in found}) == 4
    assert [f[0] for f in found[:2]] == [stanza_ids(m)[0][1] for m in (from_phone, from_http)]
    answer = next(f for f in found if f[1].get("from").startswith(server.jid("echo")))
    assert answer[0] == stanza_ids(echoed)[0][1]
    assert found[0][1].get("from").startswith(server.jid("sipuserf"))
    # each sender that is an account has the message once in its own archive
    userc = archiving(xmpp_client, server, "userc")
    assert bodies(query(userc)[0]) == ["from http"]
    sipuserf = archiving(xmpp_client, server, "sipuserf")
    found, _ = query(sipuserf)
    assert bodies(found) == ["from the phone"] and found[0][1].get("to") == server.jid("convergence")


def test_second_device_sees_no_duplicates(xmpp_server, xmpp_client):
    """Carbons + offline + MAM (ejabberd #1331): whatever path a message takes to a device, it
    carries the id it has in the archive, so a device that syncs by MAM dedupes by it."""
    server = xmpp_server({"alice": "a", "bob": "b"})
    alice = archiving(xmpp_client, server, "alice")
    send(alice, server.jid("bob"), "while away")  # bob has no session: stored offline and archived
    phone = archiving(xmpp_client, server, "bob", resource="phone", presence=False)
    phone.call(lambda: phone.xmpp.plugin["xep_0280"].enable())
    phone.call(lambda: phone.xmpp.send_presence())
    offline = receive(phone, "while away")
    assert offline.xml.find("{urn:xmpp:delay}delay") is not None
    seen = {"phone": [stanza_ids(offline)[0][1]], "laptop": []}
    laptop = archiving(xmpp_client, server, "bob", resource="laptop", presence=False)
    laptop.call(lambda: laptop.xmpp.plugin["xep_0280"].enable())
    laptop.call(lambda: laptop.xmpp.send_presence())
    phone.next("presence", match=lambda p: p["from"] == laptop.jid)
    # to the phone's full JID: the laptop gets a <received/> carbon carrying the same stanza id
    send(alice, phone.jid, "to the phone")
    seen["phone"].append(stanza_ids(receive(phone, "to the phone"))[0][1])
    carbon = laptop.next("carbon_received")
    seen["laptop"].append(stanza_ids(carbon["carbon_received"])[0][1])
    send(alice, server.jid("bob"), "to both")  # bare JID: each session gets it, one archive id
    seen["phone"].append(stanza_ids(receive(phone, "to both"))[0][1])
    seen["laptop"].append(stanza_ids(receive(laptop, "to both"))[0][1])
    assert seen["laptop"] == seen["phone"][1:]
    # the laptop syncs by MAM: the archive has each message once, under the ids it saw
    found, fin = query(laptop)
    assert bodies(found) == ["while away", "to the phone", "to both"] and fin.get("complete") == "true"
    assert [f[0] for f in found] == seen["phone"]
    assert set(seen["laptop"]) <= {f[0] for f in found}


def test_retention_and_the_archive_switch(convergence_server, xmpp_client):
    server = convergence_server({"alice": "a", "bob": "b"}, xmpp={"archive_retention": 1})
    old = datetime.utcnow() - timedelta(days=2)
    archive_store.append(server._core.db, [archive_store.Item(
        "old-one", archive_store.timestamp(old), "x", f"<message xmlns='{CLIENT}'><body>old</body></message>",
        "bob", server.jid("bob"), server.jid("bob"), None, server.jid("alice"), server.jid("alice"))],
        lambda *_: True)
    server.restart()  # retention runs at start, then hourly
    bob = archiving(xmpp_client, server, "bob")
    alice = archiving(xmpp_client, server, "alice")
    send(alice, server.jid("bob"), "new")
    (_, stanza_id), = stanza_ids(receive(bob, "new"))
    assert bodies(query(bob)[0]) == ["new"]

    server.config["xmpp"]["archive"] = False  # the switch: nothing archived, no ids, no queries
    server.restart()
    bob, alice = archiving(xmpp_client, server, "bob"), archiving(xmpp_client, server, "alice")
    send(alice, server.jid("bob"), "not archived")
    assert stanza_ids(receive(bob, "not archived")) == []
    assert error_of(lambda: query(bob)) == "service-unavailable"
    features = {f.get("var") for f in iq(bob, f"<query xmlns='{DISCO}'/>", to=server.domain).xml.iter(f"{{{DISCO}}}feature")}
    assert MAM not in features
    assert [r.stanza_id for r in archive_store.query(server._core.db, "bob", archive_store.Filter(), 10)[0]] \
        == [stanza_id]
