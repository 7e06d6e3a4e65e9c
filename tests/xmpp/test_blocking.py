"""Blocking Command (XEP-0191): stock slixmpp clients (plugin xep_0191) over STARTTLS, a SIPp
phone and the HTTP API as blocked senders; matching, parsing and screening sans-IO."""
from __future__ import annotations

import json
import queue
import time
import urllib.error
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from actors import ACCOUNTS, SIP, Phone, condition as stanza_condition
from convergence import Address, Message, RoutingError, hookimpl
from convergence.plugins.xmpp import blocking
from convergence.plugins.xmpp.stanzas import StanzaError
from sipp_runner import Sipp, needs_sipp
from tests.cluster.helpers import api_events, api_send

from .roster_client import condition, iq, send_presence

NS = blocking.NS
BLOCKED = "{jabber:client}error/{urn:xmpp:blocking:errors}blocked"


# ---- helpers ----
def blocker(xmpp_client, server, name: str, resource: str, interested: bool = True):
    """A logged-in, available client with slixmpp's XEP-0191 plugin; ``interested``: it has
    asked for the blocklist (so it gets the pushes) and checked it is as expected later."""
    client = xmpp_client(server, name, resource=resource)

    def setup():
        client.xmpp.register_plugin("xep_0191")
        client._watch("blocked")
        client._watch("unblocked")
    client.call(setup)
    if interested:
        blocklist(client)
    return client


def blocklist(client) -> list[str]:
    result = client.call(lambda: client.xmpp.plugin["xep_0191"].get_blocked())
    return [item.get("jid") for item in result.xml.find(f"{{{NS}}}blocklist")]


def block(client, *jids):
    return client.call(lambda: client.xmpp.plugin["xep_0191"].block(list(jids)))


def unblock(client, *jids):
    if not jids:  # slixmpp sends no <unblock/> without items: everything, by hand (§3.4)
        return iq(client, f"<unblock xmlns='{NS}'/>", "set")
    return client.call(lambda: client.xmpp.plugin["xep_0191"].unblock(list(jids)))


def pushed(client, event: str) -> list[str]:
    """The items of the next blocked/unblocked push."""
    stanza = client.next(event)
    name = "block" if event == "blocked" else "unblock"
    return [i.get("jid") for i in stanza.xml.find(f"{{{NS}}}{name}")]


def drained(client, event: str) -> list:
    """What ``client`` got of ``event`` so far (stanzas arrive in stream order, so after a
    later stanza was seen, everything before it is queued)."""
    q, items = client.queues[event], []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def refused_iq(client, payload: str, to: str):
    with pytest.raises(IqError) as refused:
        iq(client, payload, to=to)
    return refused.value


PING = "<ping xmlns='urn:xmpp:ping'/>"


# ---- over the wire ----
def test_block_push_enforce_unblock_and_restart(xmpp_server, xmpp_client):
    """§3.2–§3.4: pushes to the interested resources only; messages, IQs and presence refused or
    withheld both ways; unavailable on block, presence again on unblock; kept across a restart."""
    server = xmpp_server({"alice": "a", "bob": "b", "carol": "c"})
    a1 = blocker(xmpp_client, server, "alice", "a1")
    a2 = blocker(xmpp_client, server, "alice", "a2")
    a3 = blocker(xmpp_client, server, "alice", "a3", interested=False)
    bob = xmpp_client(server, "bob", resource="b")
    carol = xmpp_client(server, "carol", resource="c")
    features = iq(a1, "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=server.domain)
    assert NS in [f.get("var") for f in features.xml.iter("{http://jabber.org/protocol/disco#info}feature")]
    assert blocklist(a1) == []

    block(a1, server.jid("bob"))
    assert pushed(a1, "blocked") == pushed(a2, "blocked") == [server.jid("bob")]
    # bob saw alice (shared roster): now every resource of hers is unavailable to him (§3.3)
    gone = {str(bob.next("presence", match=lambda p: p["from"].bare == server.jid("alice")
                         and p["type"] == "unavailable")["from"]) for _ in range(3)}
    assert gone == {a1.jid, a2.jid, a3.jid}
    for client in (a1, a2, a3):  # and alice's resources see bob go
        client.next("presence", match=lambda p: p["from"] == bob.jid and p["type"] == "unavailable")
    assert blocklist(a3) == [server.jid("bob")]  # a3 asks only now: it got no push before

    # inbound from bob: message and IQ get service-unavailable, presence is withheld (§3.3)
    bob.send_message(server.jid("alice"), "hi alice")
    error = bob.next("message_error")
    assert stanza_condition(error) == "service-unavailable"
    assert condition(refused_iq(bob, PING, a1.jid)) == "service-unavailable"
    assert condition(refused_iq(bob, "<vCard xmlns='vcard-temp'/>", server.jid("alice"))) == "service-unavailable"
    drained(a1, "presence")  # what came before the block
    send_presence(bob, status="busy")
    carol.next("presence", match=lambda p: p["from"] == bob.jid and p["status"] == "busy")
    carol.send_message(a1.jid, "after bob's presence")
    assert a1.next("message")["body"] == "after bob's presence"
    assert not [m for m in drained(a1, "message") if m["from"].bare == server.jid("bob")]
    assert not [p for p in drained(a1, "presence") if p["from"].bare == server.jid("bob")]
    # outbound to bob: not-acceptable with <blocked/> (§3.3)
    a2.send_message(bob.jid, "hi bob")
    error = a2.next("message_error")
    assert stanza_condition(error) == "not-acceptable" and error.xml.find(BLOCKED) is not None
    refused = refused_iq(a2, PING, bob.jid)
    assert condition(refused) == "not-acceptable" and refused.iq.xml.find(BLOCKED) is not None
    send_presence(a2, to=bob.jid)  # directed presence too
    a2.next("presence", match=lambda p: p["type"] == "error" and p.xml.find(BLOCKED) is not None)

    # unblock: pushes, bob sees alice's resources again (§3.4) and reaches her
    unblock(a2, server.jid("bob"))
    assert pushed(a1, "unblocked") == pushed(a2, "unblocked") == [server.jid("bob")]
    back = {str(bob.next("presence", match=lambda p: p["from"].bare == server.jid("alice")
                         and p["type"] == "available")["from"]) for _ in range(3)}
    assert back == {a1.jid, a2.jid, a3.jid}
    a3.next("presence", match=lambda p: p["from"] == bob.jid and p["type"] == "available")
    bob.send_message(a1.jid, "hello again")
    assert a1.next("message", match=lambda m: m["from"] == bob.jid)["body"] == "hello again"

    # a full JID blocks that resource only, a domain every JID of it but one's own (§3.6)
    block(a1, carol.jid, server.domain)
    assert pushed(a2, "blocked") == [carol.jid, server.domain]
    carol.send_message(server.jid("alice"), "blocked twice")
    assert stanza_condition(carol.next("message_error")) == "service-unavailable"
    a1.send_message(a2.jid, "own resources are never blocked")
    assert a2.next("message", match=lambda m: m["from"] == a1.jid)["body"] == "own resources are never blocked"
    unblock(a1, server.domain)
    assert pushed(a2, "unblocked") == [server.domain]
    carol.send_message(server.jid("alice"), "still blocked")
    assert stanza_condition(carol.next("message_error")) == "service-unavailable"
    bob.send_message(a1.jid, "not blocked")
    assert a1.next("message", match=lambda m: m["from"] == bob.jid)["body"] == "not blocked"

    # the list is in SQL: a restart keeps it
    for client in (a1, a2, a3, bob, carol):
        client.disconnect()
    server.restart()
    alice = blocker(xmpp_client, server, "alice", "again", interested=False)
    assert blocklist(alice) == [carol.jid]
    unblock(alice)
    assert pushed(alice, "unblocked") == [] and blocklist(alice) == []


def test_bad_requests_and_subscriptions_from_a_blocked_jid(xmpp_server, xmpp_client):
    """Bad input is answered as the XEP says with the server serving on; with rosters of their
    own (no shared roster) a blocked JID's subscription request is neither shown nor kept."""
    server = xmpp_server({"alice": "a", "bob": "b"}, blocklist_max_items=3, shared_roster=False)
    alice = blocker(xmpp_client, server, "alice", "r")
    bob = xmpp_client(server, "bob", resource="b")
    block(alice, server.jid("bob"))
    pushed(alice, "blocked")
    send_presence(bob, to=server.jid("alice"), type="subscribe")
    bob.send_message(server.jid("alice"), "did you get my request?")  # bob's stanzas go in order:
    assert stanza_condition(bob.next("message_error")) == "service-unavailable"
    iq(alice, PING, to=server.domain)  # ... and what alice got before this answer is queued
    assert not [p for p in drained(alice, "presence") if p["type"] == "subscribe"]
    later = xmpp_client(server, "alice", resource="later")
    iq(later, PING, to=server.domain)  # after the pending requests of its initial presence
    assert not [p for p in drained(later, "presence") if p["type"] == "subscribe"]
    unblock(alice, server.jid("bob"))
    pushed(alice, "unblocked")
    send_presence(bob, to=server.jid("alice"), type="subscribe")
    assert alice.next("presence", match=lambda p: p["type"] == "subscribe")["from"] == server.jid("bob")

    def refused(payload: str, type: str = "set") -> IqError:
        with pytest.raises(IqError) as error:
            iq(alice, payload, type)
        return error.value
    assert condition(refused(f"<block xmlns='{NS}'/>")) == "bad-request"  # §3.3
    assert condition(refused(f"<block xmlns='{NS}'><item/></block>")) == "jid-malformed"
    for jid in ("a@b@example.org", "@example.org", "bad domain", "x@example.org/"):
        assert condition(refused(f"<block xmlns='{NS}'><item jid='{jid}'/></block>")) == "jid-malformed"
    long = "x" * 1023 + "@example.net/" + "r" * 1023  # a valid JID beyond what a list keeps
    assert condition(refused(f"<block xmlns='{NS}'><item jid='{long}'/></block>")) == "not-acceptable"
    four = "".join(f"<item jid='u{i}@example.net'/>" for i in range(4))
    assert condition(refused(f"<block xmlns='{NS}'>{four}</block>")) == "not-acceptable"
    assert condition(refused(f"<blocklist xmlns='{NS}'/>")) == "bad-request"
    assert condition(refused(f"<block xmlns='{NS}'><item jid='x@example.net'/></block>", "get")) == "bad-request"
    block(alice, "u1@example.net", "u2@example.net", "U1@example.net")  # the same JID twice
    assert pushed(alice, "blocked") == ["u1@example.net", "u2@example.net"]
    block(alice, "u3@example.net")
    pushed(alice, "blocked")
    assert condition(refused(f"<block xmlns='{NS}'><item jid='u4@example.net'/></block>")) == "not-acceptable"
    assert blocklist(alice) == ["u1@example.net", "u2@example.net", "u3@example.net"]
    unblock(alice, "nobody@example.net")  # not blocked: no error (the XEP defines none)
    assert pushed(alice, "unblocked") == ["nobody@example.net"]
    assert condition(refused(f"<block xmlns='{NS}'><item jid='{server.jid('alice')}'/></block>")) == "not-acceptable"
    iq(alice, PING, to=server.domain)  # still serving


def test_messages_stored_before_a_block_are_not_delivered(xmpp_server, xmpp_client):
    """§3.3 ("MUST NOT deliver any XML stanzas from the JID to the user"), for the offline store
    too: what a JID sent before the user blocked it is dropped at the next login, not held (the
    router screens the backlog again, docs/xmpp.md); the other senders' messages arrive."""
    server = xmpp_server({"alice": "a", "bob": "b", "carol": "c"})
    bob = xmpp_client(server, "bob", resource="b")
    carol = xmpp_client(server, "carol", resource="c")
    bob.send_message(server.jid("alice"), "stored before the block")
    bob.send_message(server.jid("alice"), "stored too")
    iq(bob, PING, to=server.domain)  # bob's messages are stored once this is answered
    carol.send_message(server.jid("alice"), "from carol")  # so carol's comes after them
    iq(carol, PING, to=server.domain)
    alice = xmpp_client(server, "alice", resource="r", presence=False)  # the backlog waits
    alice.call(lambda: alice.xmpp.register_plugin("xep_0191"))
    block(alice, server.jid("bob"))
    send_presence(alice)  # initial presence: the backlog comes (XEP-0160)
    assert backlog(alice, "from carol") == ["from carol"]
    unblock(alice, server.jid("bob"))  # dropped, not held: an unblock brings nothing back
    alice.disconnect()
    carol.send_message(server.jid("alice"), "later")
    iq(carol, PING, to=server.domain)
    assert backlog(xmpp_client(server, "alice", resource="again"), "later") == ["later"]


def backlog(client, last: str) -> list[str]:
    """The bodies ``client`` got up to the one that is ``last`` (the backlog is in order)."""
    got = [client.next("message")["body"]]
    while got[-1] != last:
        got.append(client.next("message")["body"])
    return got


@needs_sipp
def test_blocked_phone_and_http_sender_get_403(convergence_server, xmpp_client, tmp_path):
    """The block list is the account's, whatever protocol the sender uses: a SIP MESSAGE from a
    blocked phone gets 403, a blocked HTTP API sender 403; the blocking user's own HTTP message
    to a JID it blocks is refused (not-acceptable: 400)."""
    server = convergence_server(ACCOUNTS, sip=SIP)
    folder = tmp_path / "sipp"
    folder.mkdir()
    phone = Phone(Sipp(server.sip_port, folder))
    user = blocker(xmpp_client, server, "convergence", "desk")
    block(user, server.jid("sipuserf"), server.jid("userc"))
    pushed(user, "blocked")
    phone.register()
    phone.send("convergence", "let me in", expect=403)

    def http(sender: str, to: str, body: str):
        try:
            return 200, api_send(server, sender, server.passwords[sender], server.jid(to), body)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
    status, answer = http("userc", "convergence", "from the API")
    assert status == 403 and answer["condition"] == "forbidden"
    status, answer = http("convergence", "userc", "to someone I block")
    assert status == 400 and answer["condition"] == "not-acceptable"
    unblock(user, server.jid("sipuserf"), server.jid("userc"))
    pushed(user, "unblocked")
    phone.send("convergence", "now?")
    assert user.next("message", match=lambda m: m["from"].bare == server.jid("sipuserf"))["body"].strip() == "now?"
    assert http("userc", "convergence", "and me")[0] == 200
    assert user.next("message", match=lambda m: m["from"].bare == server.jid("userc"))["body"] == "and me"


def test_event_stream_of_a_blocked_http_user(convergence_server, xmpp_client):
    """The HTTP API's event stream (docs/http-api.md) follows the block list too: the blocking
    user goes unavailable on the blocked user's stream at the block, and comes back at the
    unblock (the core's ``screen_presence`` and ``on_screen_changed`` hooks)."""
    server = convergence_server(ACCOUNTS)
    user = blocker(xmpp_client, server, "convergence", "desk")
    events = api_events(server, "userc", server.passwords["userc"])
    me = server.jid("convergence")

    def next_presence_of(available: bool, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout  # keep-alives keep the stream going meanwhile
        for kind, data in events:
            if kind == "presence" and data["jid"] == me and data["available"] is available:
                return
            assert time.monotonic() < deadline, f"no presence {available} of {me} on the stream"
    next_presence_of(True)  # in the snapshot
    block(user, server.jid("userc"))
    pushed(user, "blocked")
    next_presence_of(False)
    unblock(user, server.jid("userc"))
    pushed(user, "unblocked")
    next_presence_of(True)


# ---- sans-IO ----
def items(*jids) -> frozenset:
    return frozenset(Address.from_jid(j) for j in jids)


@pytest.mark.parametrize("item, jid, blocked", [
    ("u@d.example/r", "u@d.example/r", True), ("u@d.example/r", "u@d.example/other", False),
    ("u@d.example/r", "u@d.example", False),
    ("u@d.example", "u@d.example/any", True), ("u@d.example", "u@d.example", True),
    ("u@d.example", "v@d.example/r", False),
    ("d.example/r", "d.example/r", True), ("d.example/r", "u@d.example/r", False),
    ("d.example/r", "d.example", False),
    ("d.example", "d.example", True), ("d.example", "u@d.example/r", True),
    ("d.example", "d.example/r", True), ("d.example", "u@sub.d.example", False),
    ("U@D.Example", "u@d.example/x", True),  # stored and compared normalized (RFC 7622)
])
def test_matching_order_of_xep_0016(item, jid, blocked):
    assert blocking.matches(items(item), Address.from_jid(jid)) is blocked


def test_parse_items_normalizes_dedupes_and_refuses():
    def parse(xml: str, limit: int = 10):
        return [a.jid for a in blocking.parse_items(ET.fromstring(xml), limit)]
    body = "<block xmlns='urn:xmpp:blocking'>{}</block>"
    assert parse(body.format("<item jid='A@X.example'/><item jid='a@x.example'/><item jid='x.example/R'/>")) \
        == ["a@x.example", "x.example/R"]
    assert parse(body.format("<other jid='a@x.example'/>")) == []  # only items count
    for bad, error in (("<item/>", "jid-malformed"), ("<item jid=''/>", "jid-malformed"),
                       ("<item jid='a@@x'/>", "jid-malformed"),
                       ("<item jid='a@x.example'/>" * 11, "not-acceptable")):
        with pytest.raises(StanzaError) as refused:
            parse(body.format(bad))
        assert refused.value.condition == error


class Service:
    """What BlockLists uses of a c2s service, with lists set directly instead of read from SQL."""
    domain = "example.org"


def test_screening_by_protocol_and_direction():
    lists = blocking.BlockLists(Service(), 10)
    alice, bob = Address.from_jid("alice@example.org"), Address.from_jid("bob@example.org/phone")
    lists._set("alice", [bob.bare])
    lists._set("bob", [])
    inbound = Message(bob, alice, "hi")
    for source, expected in (("xmpp", "service-unavailable"), ("sip", "forbidden"), ("http", "forbidden")):
        with pytest.raises(RoutingError) as refused:
            lists.screen(inbound, source)
        assert refused.value.condition == expected
    with pytest.raises(blocking.Blocked) as refused:
        lists.screen(inbound.reply(), "http")
    assert refused.value.condition == "not-acceptable" and refused.value.app.tag == \
        "{urn:xmpp:blocking:errors}blocked"
    lists.screen(Message(alice.with_resource("a"), alice.with_resource("b"), "mine"), "xmpp")
    assert lists.hides(bob, alice) and lists.hides(alice.with_resource("x"), bob)
    assert not lists.hides(alice.with_resource("x"), alice.with_resource("y"))
    assert lists.refusal(bob, alice).condition == "service-unavailable"
    assert lists.refusal(alice, bob).app is not None
    remote = Address.from_jid("eve@elsewhere.example/r")  # remote accounts' lists are not ours
    assert lists.refusal(alice, remote) is None and not lists.hides(remote, bob)


def test_reread_applies_missed_changes_and_keeps_those_made_meanwhile(core, register_plugin, monkeypatch):
    """``BlockLists.reread`` (a cluster's ``on_cluster_resync``, docs/cluster.md): a change
    stored by another node whose cast was missed takes effect here (``on_screen_changed`` fired);
    a list set while the re-read was waiting for the database (here, a block made meanwhile) is
    not put back to the older rows the re-read got. Across nodes with Redis stopped and started:
    tests/cluster/test_redis_outage.py."""
    from convergence.plugins.xmpp import blocking_store

    changed = []

    class Screen:
        @hookimpl
        def on_screen_changed(self, account):
            changed.append(account.local)
    register_plugin(Screen(), "screen")
    alice, bob, carol = (core.add_account(n, "pw") for n in ("alice", "bob", "carol"))
    lists = core.pm.get_plugin("xmpp:server").service.blocking
    assert not lists.of(alice) and not lists.of(carol)  # cached
    blocking_store.add(core.db, "alice", [bob.jid], 10)  # another node's change, its cast lost
    load_many = blocking_store.load_many

    def slow(db, accounts):  # carol blocks bob here while the re-read waits for the database
        rows = load_many(db, accounts)
        lists.block(carol, [bob])
        return rows
    monkeypatch.setattr(blocking.store, "load_many", slow)
    changed.clear()
    lists.reread()
    assert lists.of(alice) == {bob} and lists.of(carol) == {bob}
    assert changed == ["carol", "alice"]  # carol's block, then alice's list read again
    monkeypatch.setattr(blocking.store, "load_many", load_many)
    lists.reread()  # nothing changed since: nothing happens
    assert changed == ["carol", "alice"]
