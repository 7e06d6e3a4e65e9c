"""The XMPP Interop Testing (sinttest) RFC 6121 cases, replayed with slixmpp.

One test per sinttest case, named after its class and method (smack-sint-server-extensions
``rfc6121.section2``, ``rfc6121.section8``, ``subscription``; Smack ``roster``); parametrized ids
carry sinttest's variants (e.g. the resource priorities of §8.5.2.1.1). Method names were taken
from the sinttest sources for §2.3, §2.5, §2.6, §3, §8.5.1 and §8.5.2.1.1; elsewhere (§2.1, §2.4,
the other §8.5 classes, the Smack roster tests) the test names the class and the RFC rule checked. One server for the module,
run as a plain RFC 6121 server (no shared roster: with it every local account is already a
``both`` contact); every test gets fresh accounts, so tests stay independent.

Like sinttest, "nothing arrived" is established without timeouts: after the stanza under test the
sender sends a marker message, and since a server processes a client's stanzas in order, whatever
the stanza caused has arrived before the marker.
"""
import queue
import uuid
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from convergence.testing import ServerProcess, create_schema, toml_value

from scenario_kit import XmppServer
from .roster_client import (ROSTER, befriend, condition, groups, iq, manual, next_presence, next_push,
                            roster_get, roster_remove, roster_set, send_presence)

DOMAIN = "example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory, pytestconfig, fork_server):
    tmp = tmp_path_factory.mktemp("rfc6121")
    url = pytestconfig.getoption("convergence_database")
    database_url, drop = create_schema(url) if url else ("", None)

    def serve(config):
        path = tmp / "convergence.toml"
        path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items())
                                for name, t in config.items()))
        return ServerProcess(path, (), tmp, launcher=fork_server)
    running = XmppServer(serve, tmp, database_url, {}, {"xmpp": {"shared_roster": False}})
    yield running
    running.process.stop()
    running.close()
    if drop:
        drop()


@pytest.fixture
def users(server):
    """Three fresh accounts: their names (``one``, ``two``, ``three`` in sinttest's terms)."""
    names = [f"u{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for name in names:
        server.add_account(name, "pw-" + name)
    return names


def target() -> str:
    """A JID with no account, as sinttest's roster tests use (``test-target-<random>``)."""
    return f"test-target-{uuid.uuid4().hex[:8]}@{DOMAIN}"


def marker(sender, to, received_by):
    """Send a marker message from ``sender`` to ``to`` and wait until ``received_by`` gets it;
    return what ``received_by`` received before it (message events)."""
    text = "marker " + uuid.uuid4().hex
    before = []
    sender.send_message(to, text)
    received_by.next("message", match=lambda m: before.append(m) or m["body"] == text)
    return before[:-1]


def errors_for(sender, recipient):
    """Complete a round trip through ``recipient`` and return the message errors ``sender`` got
    (the test watches ``message_error`` before it sends the stanza under test)."""
    marker(recipient, sender.jid, sender)
    q = sender.queues["message_error"]
    return [q.get_nowait() for _ in range(q.qsize())]


def send_raw(client, xml: str) -> None:
    client.call(lambda: client.xmpp.send_raw(xml))


def with_priority(client, priority: int) -> None:
    """Send available presence with ``priority`` and wait for the server's echo (§4.2.2)."""
    send_presence(client, priority=priority)
    client.next("presence", match=lambda p: str(p["from"]) == client.jid and p["priority"] == priority)


# ---- §2.1 syntax (RFC6121Section2_1_SyntaxIntegrationTest) ---------------------------------
def test_RFC6121Section2_1_Syntax_testRosterResultItemsHaveJidAndSubscription(server, users, xmpp_client):
    """§2.1.2: every item of a roster result has a 'jid' and a valid 'subscription'."""
    one = xmpp_client(server, users[0], roster=True)
    roster_set(one, target(), "Test User", ["Test Group"])
    items, ver = roster_get(one)
    assert items and ver is not None
    assert all(i.get("jid") and i.get("subscription") in ("none", "to", "from", "both") for i in items.values())


def test_RFC6121Section2_1_Syntax_testRosterGetIsAnsweredForTheSenderOnly(server, users, xmpp_client):
    """§2.1.3, §2.3.2: a roster get/set 'to' another account is an error (never someone else's roster)."""
    one = xmpp_client(server, users[0], roster=True)
    with pytest.raises(IqError) as info:
        iq(one, f"<query xmlns='{ROSTER}'/>", to=f"{users[1]}@{DOMAIN}")
    assert condition(info.value) in ("service-unavailable", "forbidden")


# ---- §2.3 add (RFC6121Section2_3_AddIntegrationTest) -------------------------------------------
def test_RFC6121Section2_3_Add_testRosterSetResult(server, users, xmpp_client):
    """§2.3.2: a roster set for a new item is answered with a result."""
    one = xmpp_client(server, users[0], roster=True)
    assert roster_set(one, target(), "Test User", ["Test Group"])["type"] == "result"


@pytest.mark.parametrize("presence", [True, False],
                         ids=["SelfWithInitialPresence", "SelfWithoutInitialPresence"])
def test_RFC6121Section2_3_Add_testRosterSetGeneratesPushToInterestedResource(server, users, xmpp_client,
                                                                                presence):
    """§2.3.2: the new item is pushed to the interested resource that set it."""
    one = xmpp_client(server, users[0], roster=True, presence=presence)
    jid = target()
    roster_set(one, jid, "Test User", ["Test Group"])
    item = next_push(one, jid, "none")
    assert (item.get("name"), groups(item)) == ("Test User", ["Test Group"])


@pytest.mark.parametrize("presence", [True, False],
                         ids=["OtherResourceWithInitialPresence", "OtherResourceWithoutInitialPresence"])
def test_RFC6121Section2_3_Add_testRosterSetGeneratesPushToInterestedResourceOther(server, users, xmpp_client,
                                                                                     presence):
    """§2.3.2: ... and to the user's other interested resources."""
    primary = xmpp_client(server, users[0], roster=True)
    secondary = xmpp_client(server, users[0], resource="secondary", roster=True, presence=presence)
    jid = target()
    roster_set(primary, jid, "Test User", ["Test Group"])
    item = next_push(secondary, jid, "none")
    assert (item.get("name"), groups(item)) == ("Test User", ["Test Group"])


def test_RFC6121Section2_3_Add_testRosterSetNoPushToUninterestedResource(server, users, xmpp_client):
    """§2.1.6: a resource that never requested the roster is not interested and gets no push."""
    primary = xmpp_client(server, users[0], roster=True)
    other = xmpp_client(server, users[0], resource="other", roster=False)
    jid = target()
    roster_set(primary, jid)
    next_push(primary, jid)
    marker(primary, other.jid, other)  # ordered after the push that other would have got
    other.none("roster_update", 0)


@pytest.mark.parametrize("payload, expected", [
    ("<item jid='{a}'/><item jid='{b}'/>", "bad-request"),                    # more than one item
    ("<item jid='{a}'><group>G</group><group>G</group></item>", "bad-request"),  # duplicate group
    ("<item jid='{a}'><group></group></item>", "not-acceptable"),               # empty group
    ("<item jid='{a}' name='" + "n" * 1024 + "'/>", "not-acceptable"),           # name too long
    ("<item jid='{a}'><group>" + "g" * 1024 + "</group></item>", "not-acceptable"),  # group too long
], ids=["testRosterSetTwoItems", "testRosterSetDuplicateGroup", "testRosterSetEmptyGroup",
        "testRosterSetItemNameTooLong", "testRosterSetGroupNameTooLong"])
def test_RFC6121Section2_3_Add_errors(server, users, xmpp_client, payload, expected):
    """§2.3.3: roster sets the server must refuse, with their error conditions."""
    one = xmpp_client(server, users[0], roster=True)
    query = f"<query xmlns='{ROSTER}'>" + payload.format(a=target(), b=target()) + "</query>"
    with pytest.raises(IqError) as info:
        iq(one, query, "set")
    assert condition(info.value) == expected


# ---- §2.4 update (RFC6121Section2_4_UpdateIntegrationTest) ------------------------------------
@pytest.mark.parametrize("before, after", [
    ((None, ["Test Group"]), ("New Name", ["Test Group"])),
    (("Old Name", ["Test Group"]), ("Old Name", ["Test Group", "Additional Group"])),
    (("Old Name", ["Test Group"]), ("Old Name", [])),
], ids=["testRosterUpdateName", "testRosterUpdateAddGroup", "testRosterUpdateRemoveGroups"])
def test_RFC6121Section2_4_Update_testRosterUpdateGeneratesPushToInterestedResources(
        server, users, xmpp_client, before, after):
    """§2.4.2/§2.4.3: an update is answered with a result and pushed to every interested resource."""
    primary = xmpp_client(server, users[0], roster=True)
    secondary = xmpp_client(server, users[0], resource="secondary", roster=True)
    jid = target()
    roster_set(primary, jid, *before)
    next_push(secondary, jid)
    assert roster_set(primary, jid, *after)["type"] == "result"
    for client in (primary, secondary):
        push = client.next("roster_update", match=lambda s: any(
            i.get("jid") == jid and i.get("name") == after[0] and groups(i) == after[1]
            for i in s.xml.iter(f"{{{ROSTER}}}item")))
        assert push["type"] == "set"
    items, _ = roster_get(primary)
    assert (items[jid].get("name"), groups(items[jid])) == after


# ---- §2.5 delete (RFC6121Section2_5_DeleteIntegrationTest) ------------------------------------
def test_RFC6121Section2_5_Delete_testRosterDeleteResult(server, users, xmpp_client):
    """§2.5.2: removing an item is answered with a result."""
    one = xmpp_client(server, users[0], roster=True)
    jid = target()
    roster_set(one, jid, "Test User", ["Test Group"])
    assert roster_remove(one, jid)["type"] == "result"


@pytest.mark.parametrize("presence, other", [(True, False), (False, False), (True, True)],
                         ids=["SelfWithInitialPresence", "SelfWithoutInitialPresence",
                              "OtherResourceWithInitialPresence"])
def test_RFC6121Section2_5_Delete_testRosterDeleteGeneratesPushToInterestedResource(
        server, users, xmpp_client, presence, other):
    """§2.5.2: the removal is pushed (subscription 'remove') to the interested resource that
    removed it and to the user's other interested resources."""
    one = xmpp_client(server, users[0], roster=True, presence=presence)
    observer = xmpp_client(server, users[0], resource="secondary", roster=True) if other else one
    jid = target()
    roster_set(one, jid, "Test User", ["Test Group"])
    next_push(observer, jid, "none")
    roster_remove(one, jid)
    next_push(observer, jid, "remove")
    assert jid not in roster_get(observer)[0]


def test_RFC6121Section2_5_Delete_testRosterDeleteNonExistingItem(server, users, xmpp_client):
    """§2.5.3: removing an item that is not on the roster is item-not-found."""
    one = xmpp_client(server, users[0], roster=True)
    with pytest.raises(IqError) as info:
        roster_remove(one, target())
    assert condition(info.value) == "item-not-found"


# ---- §2.6 versioning (RFC6121Section2_6a/b/c) ----------------------------------------------------
def test_RFC6121Section2_6a_VerStreamFeature(server, users, xmpp_client):
    """§2.6.1: the stream offers <ver xmlns='urn:xmpp:features:rosterver'/>."""
    one = xmpp_client(server, users[0])
    assert "rosterver" in one.xmpp.features


def test_RFC6121Section2_6b_VerRequest_testEmptyVer(server, users, xmpp_client):
    """§2.6.2: a get with ver='' returns the roster with its version."""
    one = xmpp_client(server, users[0])
    items, ver = roster_get(one, ver="")
    assert ver


CHANGES = {  # sinttest method: (starting point, change) as roster_set arguments; None removes
    "testRosterItemAddition": ((None, []), "add"),
    "testRosterItemRemoval": ((None, []), None),
    "testRosterItemModificationHandleAddition": ((None, []), ("FooBar", [])),
    "testRosterItemModificationHandleModification": (("Old Name", []), ("Updated Name", [])),
    "testRosterItemModificationHandleRemoval": (("FooBar", []), (None, [])),
    "testRosterItemModificationGroupAddition": ((None, []), (None, ["Test Group"])),
    "testRosterItemModificationGroupAdditionAnother": ((None, ["Test Group"]),
                                                       (None, ["Test Group", "Additional Group"])),
    "testRosterItemModificationGroupModification": ((None, ["Test Group"]), (None, ["Changed Group"])),
    "testRosterItemModificationGroupRemoval": ((None, ["Test Group", "Other"]), (None, ["Other"])),
}


@pytest.mark.parametrize("name", CHANGES)
def test_RFC6121Section2_6b_VerRequest(server, users, xmpp_client, name):
    """§2.6.3: a get with a 'ver' that has since changed returns the whole new roster (or an empty
    result and pushes); the push of the change carries the new version."""
    one = xmpp_client(server, users[0], roster=True)
    (start, change), jid = CHANGES[name], target()
    roster_set(one, jid, *start)
    next_push(one, jid)
    _, old = roster_get(one, ver="")
    if change is None:
        roster_remove(one, jid)
    elif change == "add":
        jid = target()
        roster_set(one, jid)
    else:
        roster_set(one, jid, *change)
    push = one.next("roster_update", match=lambda s: any(
        i.get("jid") == jid for i in s.xml.iter(f"{{{ROSTER}}}item")))
    new = push.xml.find(f"{{{ROSTER}}}query").get("ver")
    assert new and new != old
    items, ver = roster_get(one, ver=old)
    assert ver == new and (jid in items) == (change is not None)
    if change not in (None, "add"):
        assert (items[jid].get("name"), groups(items[jid])) == change


def test_RFC6121Section2_6c_VerSuccess(server, users, xmpp_client):
    """§2.6.3: a get with the current 'ver' is an empty result (changes would come as pushes)."""
    one = xmpp_client(server, users[0], roster=True)
    roster_set(one, target(), "Test User")
    _, ver = roster_get(one, ver="")
    assert roster_get(one, ver=ver) is None


# ---- Smack RosterIntegrationTest / LowLevelRosterIntegrationTest (§2 with §3) -------------------
def test_RosterIntegrationTest_subscribeRequestListenerTest(server, users, xmpp_client):
    """§3.1: one adds two and subscribes; two approves; one's roster item becomes 'to' with the
    name and group one gave it, and one receives two's presence."""
    one = manual(xmpp_client, server, users[0])
    two = manual(xmpp_client, server, users[1])
    bare_two = f"{users[1]}@{DOMAIN}"
    roster_set(one, bare_two, "Two", ["Friends"])
    send_presence(one, bare_two, "subscribe")
    next_push(one, bare_two, "none")
    next_presence(two, f"{users[0]}@{DOMAIN}", "subscribe")
    send_presence(two, f"{users[0]}@{DOMAIN}", "subscribed")
    item = next_push(one, bare_two, "to")
    assert (item.get("name"), groups(item), item.get("ask")) == ("Two", ["Friends"], None)
    next_presence(one, two.jid)  # two's current presence follows the approval (§3.1.5)


def test_LowLevelRosterIntegrationTest_testPresenceAfterRosterRemoval(server, users, xmpp_client):
    """§2.5.2: removing a 'both' contact cancels both subscriptions: each side gets unavailable
    from the other and their roster items go away."""
    one = manual(xmpp_client, server, users[0])
    two = manual(xmpp_client, server, users[1])
    befriend(one, two)
    roster_remove(one, f"{users[1]}@{DOMAIN}")
    next_presence(two, one.jid, "unavailable")
    next_presence(one, two.jid, "unavailable")
    next_push(two, f"{users[0]}@{DOMAIN}", "none")


# ---- subscriptions (§3): SubscriptionIntegrationTest, LowLevelSubscriptionIntegrationTest -------
def _subscribe(client, to, extension=False):
    def send():
        stanza = client.xmpp.make_presence(pto=to, ptype="subscribe")
        if extension:
            stanza.xml.append(ET.fromstring("<test xmlns='org.example.test'/>"))
        stanza.send()
    client.call(send)


@pytest.mark.parametrize("unknown", [False, True], ids=["", "UnknownResource_8_5_3_2_2"])
@pytest.mark.parametrize("extension", [False, True], ids=["", "WithExtension"])
def test_SubscriptionIntegrationTest_testSubscriptionRequest(server, users, xmpp_client, extension,
                                                             unknown):
    """§3.1.2/§3.1.3, §8.5.3.2.2: a request to a full JID (a session's, or one with no such
    resource) is handled for the bare JID and delivered, with its extension elements, stamped
    with the sender's bare JID."""
    one = manual(xmpp_client, server, users[0])
    two = manual(xmpp_client, server, users[1])
    _subscribe(two, f"{users[0]}@{DOMAIN}/unknown" if unknown else one.jid, extension)
    request = next_presence(one, f"{users[1]}@{DOMAIN}", "subscribe")
    assert str(request["from"]) == f"{users[1]}@{DOMAIN}"
    assert (request.xml.find("{org.example.test}test") is not None) == extension


def test_SubscriptionIntegrationTest_testSubscriptionApproval(server, users, xmpp_client):
    """§3.1.5: after approval the subscriber receives the contact's presence."""
    one = manual(xmpp_client, server, users[0])
    two = manual(xmpp_client, server, users[1])
    _subscribe(two, f"{users[0]}@{DOMAIN}")
    next_presence(one, f"{users[1]}@{DOMAIN}", "subscribe")
    send_presence(one, f"{users[1]}@{DOMAIN}", "subscribed")
    next_presence(two, f"{users[0]}@{DOMAIN}", "subscribed")
    next_presence(two, one.jid)


@pytest.mark.parametrize("extension", [False, True], ids=["", "WithExtension"])
def test_LowLevelSubscriptionIntegrationTest_testSubscriptionRequestOffline(server, users, xmpp_client,
                                                                           extension):
    """§3.1.3: a request to an offline contact is delivered, extensions and all, when it logs in."""
    two = manual(xmpp_client, server, users[1])
    _subscribe(two, f"{users[0]}@{DOMAIN}", extension)
    next_push(two, f"{users[0]}@{DOMAIN}")
    one = manual(xmpp_client, server, users[0], roster=False)
    request = next_presence(one, f"{users[1]}@{DOMAIN}", "subscribe")
    assert (request.xml.find("{org.example.test}test") is not None) == extension


def test_RFC6121Section3_4_PreApproval(server, users, xmpp_client):
    """§3.4 (no sinttest class): a pre-approved subscribe is answered by the server, never shown."""
    one = manual(xmpp_client, server, users[0])
    two = manual(xmpp_client, server, users[1])
    send_presence(one, f"{users[1]}@{DOMAIN}", "subscribed")  # pre-approval
    item = next_push(one, f"{users[1]}@{DOMAIN}", "none")
    assert item.get("approved") == "true"
    _subscribe(two, f"{users[0]}@{DOMAIN}")
    next_presence(two, f"{users[0]}@{DOMAIN}", "subscribed")
    next_push(one, f"{users[1]}@{DOMAIN}", "from")
    marker(two, one.jid, one)
    assert "subscribe" not in [p["type"] for p in drain_queue(one, "presence")]  # never shown to one


# ---- §8.5 routing to local users (RFC6121Section8_5_*) ----------------------------------------
PRIORITIES = {
    "OneResourcePrioPositive": [1], "OneResourcePrioZero": [0], "OneResourcePrioNegative": [-1],
    "MultipleResourcesPrioPositive": [1, 1, 1], "MultipleResourcesPrioPositiveAndNegative": [1, 1, -1, 1],
    "MultipleResourcesPrioDifferentPositive": [3, 1, 2],
    "MultipleResourcesPrioDifferentPositiveAndNegative": [1, 2, -1, 3],
    "MultipleResourcesPrioZero": [0, 0, 0], "MultipleResourcesPrioZeroAndNegative": [0, 0, -1, 0],
    "MultipleResourcesPrioDifferentNonNegative": [3, 1, 0],
    "MultipleResourcesPrioDifferentNonNegativeAndNegative": [1, 0, -1, 3],
    "MultipleResourcesPrioNegative": [-1, -1, -1],
}


def resources_with(server, xmpp_client, name, priorities):
    clients = [xmpp_client(server, name, resource=f"r{i}") for i in range(len(priorities))]
    for client, priority in zip(clients, priorities):
        with_priority(client, priority)
    return clients


def needle_received(sender, clients, needle):
    """{full JID: the message with body ``needle``} for each client that received it."""
    got = {}
    for client in clients:
        for m in marker(sender, client.jid, client):
            if m["body"] == needle:
                got[client.jid] = m
    return got


@pytest.mark.parametrize("kind", ["normal", "chat", "headline", "groupchat", "error"])
@pytest.mark.parametrize("priorities", PRIORITIES.values(), ids=PRIORITIES.keys())
def test_RFC6121Section8_5_2_1_1_Message(server, users, xmpp_client, kind, priorities):
    """§8.5.2.1.1, message to the bare JID of a user with available resources: normal, chat and
    headline reach every non-negative resource (never a negative one) with 'to' left bare;
    groupchat is refused with an error; error is silently ignored."""
    two = resources_with(server, xmpp_client, users[1], priorities)
    one = xmpp_client(server, users[0])
    one.watch("message_error")
    needle, bare_two = uuid.uuid4().hex, f"{users[1]}@{DOMAIN}"
    one.send_message(bare_two, needle, type=kind)
    got = needle_received(one, two, needle)
    errors = errors_for(one, two[0])
    if kind in ("groupchat", "error"):
        assert got == {}
        assert [condition_of(e) for e in errors] == (["service-unavailable"] if kind == "groupchat" else [])
        return
    assert set(got) == {c.jid for c, p in zip(two, priorities) if p >= 0}
    assert all(str(m["to"]) == bare_two and m["type"] == kind for m in got.values())
    assert errors == []


def condition_of(stanza) -> str:
    return stanza["error"]["condition"]


@pytest.mark.parametrize("kind", [None, "unavailable"], ids=["Available", "Unavailable"])
@pytest.mark.parametrize("priorities", PRIORITIES.values(), ids=PRIORITIES.keys())
def test_RFC6121Section8_5_2_1_2_Presence(server, users, xmpp_client, kind, priorities):
    """§8.5.2.1.2: directed presence (available or unavailable) to a bare JID reaches every
    available resource, whatever its priority, with 'to' left bare."""
    two = resources_with(server, xmpp_client, users[1], priorities)
    one = xmpp_client(server, users[0])
    bare_two = f"{users[1]}@{DOMAIN}"
    if kind == "unavailable":
        send_presence(one, bare_two)  # directed available presence first
    send_presence(one, bare_two, kind, status="needle")
    for client in two:
        p = client.next("presence", match=lambda p: str(p["from"]) == one.jid and p["status"] == "needle")
        assert (str(p["to"]), p.xml.get("type")) == (bare_two, kind)


IQ_UNKNOWN = "<query xmlns='urn:example:unknown'/>"


@pytest.mark.parametrize("available", [True, False], ids=["8_5_2_1_3", "8_5_2_2_3"])
def test_RFC6121Section8_5_2_x_3_Iq(server, users, xmpp_client, available):
    """§8.5.2.1.3 (resources available) and §8.5.2.2.3 (none): an IQ to a bare JID is answered by
    the server on the user's behalf and never delivered to a resource: a namespace the server
    cannot answer for is service-unavailable; vcard-temp it answers."""
    two = xmpp_client(server, users[1], presence=available)
    iqs = queue.Queue()  # every IQ two's client sees
    two.call(lambda: two.xmpp.register_handler(Callback("all iq", MatchXPath("{jabber:client}iq"), iqs.put)))
    one = xmpp_client(server, users[0])
    bare_two = f"{users[1]}@{DOMAIN}"
    with pytest.raises(IqError) as info:
        iq(one, IQ_UNKNOWN, to=bare_two)
    assert condition(info.value) == "service-unavailable"
    with pytest.raises(IqError) as info:
        iq(one, "<vCard xmlns='vcard-temp'/>", to=bare_two)
    assert condition(info.value) == "item-not-found"  # answered by the server: no vCard yet
    iq(one, "<ping xmlns='urn:xmpp:ping'/>", to=two.jid)  # the control: to the full JID it arrives
    assert [s["type"] for s in drain(iqs) if s["from"].bare == f"{users[0]}@{DOMAIN}"] == ["get"]


def drain(q: queue.Queue) -> list:
    return [q.get_nowait() for _ in range(q.qsize())]


def drain_queue(client, event):
    return drain(client.queues[event])


@pytest.mark.parametrize("kind", ["normal", "chat", "headline", "groupchat", "error"])
@pytest.mark.parametrize("full", [False, True], ids=["8_5_2_2_1", "8_5_3_2_1"])
def test_RFC6121Section8_5_x_2_1_MessageNoAvailableResources(server, users, xmpp_client, raw_client,
                                                              kind, full):
    """§8.5.2.2.1 (bare JID, no available resource) and §8.5.3.2.1 (full JID of no resource):
    normal and chat are stored offline (XEP-0160) and delivered at the next initial presence;
    groupchat gets service-unavailable; headline and error are silently ignored."""
    one = xmpp_client(server, users[0])
    one.watch("message_error")
    needle = uuid.uuid4().hex
    to = f"{users[1]}@{DOMAIN}" + ("/gone" if full else "")
    one.send_message(to, needle, type=kind)
    one.send_message(one.jid, "done")
    one.next("message", match=lambda m: m["body"] == "done")
    errors = drain_queue(one, "message_error")
    assert [condition_of(e) for e in errors] == (["service-unavailable"] if kind == "groupchat" else [])
    two = raw_client(server)
    two.login(users[1], "pw-" + users[1])
    two.send(b"<presence/><message to='%s' id='end'><body>end</body></message>" % two.bound.encode())
    events = two.read(lambda e: getattr(e, "get", lambda _: None)("id") == "end")
    bodies = [e.findtext("{jabber:client}body") for e in events if getattr(e, "tag", "") == "{jabber:client}message"]
    assert bodies == ([needle, "end"] if kind in ("normal", "chat") else ["end"])


@pytest.mark.parametrize("kind", ["normal", "chat", "headline", "groupchat", "error"])
def test_RFC6121Section8_5_3_1_Message(server, users, xmpp_client, kind):
    """§8.5.3.1: a message of any type to the full JID of an available resource reaches exactly
    that resource, even one with a negative priority."""
    two = resources_with(server, xmpp_client, users[1], [-1, 1])
    one = xmpp_client(server, users[0])
    needle = uuid.uuid4().hex
    one.send_message(two[0].jid, needle, type=kind)
    got = needle_received(one, two, needle)
    assert list(got) == [two[0].jid] and str(got[two[0].jid]["to"]) == two[0].jid


def test_RFC6121Section8_5_3_1_Presence(server, users, xmpp_client):
    """§8.5.3.1: directed presence to a full JID reaches only that resource."""
    two = resources_with(server, xmpp_client, users[1], [0, 0])
    one = xmpp_client(server, users[0])
    send_presence(one, two[1].jid, status="needle")
    p = two[1].next("presence", match=lambda p: str(p["from"]) == one.jid)
    assert (str(p["to"]), p["status"]) == (two[1].jid, "needle")
    marker(one, two[0].jid, two[0])
    assert not [p for p in drain_queue(two[0], "presence") if str(p["from"]) == one.jid]


def test_RFC6121Section8_5_3_1_Iq(server, users, xmpp_client):
    """§8.5.3.1: an IQ to a full JID is delivered to that resource, which answers it."""
    two = xmpp_client(server, users[1])
    one = xmpp_client(server, users[0])
    result = one.call(lambda: one.xmpp.plugin["xep_0092"].get_version(two.jid))
    assert result["type"] == "result" and str(result["from"]) == two.jid


@pytest.mark.parametrize("kind", ["normal", "chat", "headline", "groupchat", "error"])
def test_RFC6121Section8_5_3_2_1_Message(server, users, xmpp_client, kind):
    """§8.5.3.2.1, full JID with no such resource while others are available: normal and chat are
    handled as for the bare JID (the non-negative resources get them); groupchat is
    service-unavailable; headline and error are silently ignored."""
    two = resources_with(server, xmpp_client, users[1], [1, -1])
    one = xmpp_client(server, users[0])
    one.watch("message_error")
    needle = uuid.uuid4().hex
    one.send_message(f"{users[1]}@{DOMAIN}/unknown", needle, type=kind)
    got = needle_received(one, two, needle)
    errors = errors_for(one, two[0])
    assert list(got) == ([two[0].jid] if kind in ("normal", "chat") else [])
    assert [condition_of(e) for e in errors] == (["service-unavailable"] if kind == "groupchat" else [])


@pytest.mark.parametrize("kind", [None, "unavailable", "probe"])
def test_RFC6121Section8_5_3_2_2_Presence(server, users, xmpp_client, kind):
    """§8.5.3.2.2: presence (not a subscription stanza) to a full JID with no such resource is
    silently ignored: no resource gets it, the sender gets no error."""
    two = resources_with(server, xmpp_client, users[1], [0])
    one = xmpp_client(server, users[0])
    one.watch("presence_error")
    send_presence(one, f"{users[1]}@{DOMAIN}/unknown", kind, status="needle")
    marker(one, two[0].jid, two[0])
    assert not [p for p in drain_queue(two[0], "presence") if str(p["from"]) == one.jid]
    marker(two[0], one.jid, one)
    assert drain_queue(one, "presence_error") == []


@pytest.mark.parametrize("available", [True, False], ids=["OtherResourceAvailable", "NoResources"])
def test_RFC6121Section8_5_3_2_3_Iq(server, users, xmpp_client, available):
    """§8.5.3.2.3: an IQ to a full JID with no such resource is service-unavailable."""
    if available:
        xmpp_client(server, users[1])
    one = xmpp_client(server, users[0])
    with pytest.raises(IqError) as info:
        iq(one, "<ping xmlns='urn:xmpp:ping'/>", to=f"{users[1]}@{DOMAIN}/unknown")
    assert condition(info.value) == "service-unavailable"


# ---- §8.5.1 no such user (RFC6121Section8_5_1_IntegrationTest) -----------------------------------
@pytest.mark.parametrize("full", [False, True], ids=["BareJid", "FullJid"])
def test_RFC6121Section8_5_1_testLocalDomainNoSuchUserIQ(server, users, xmpp_client, full):
    """§8.5.1: an IQ to a local JID with no account is service-unavailable."""
    one = xmpp_client(server, users[0])
    with pytest.raises(IqError) as info:
        iq(one, "<ping xmlns='urn:xmpp:ping'/>", to=f"nobody-{users[0]}@{DOMAIN}" + ("/r" if full else ""))
    assert condition(info.value) == "service-unavailable"


@pytest.mark.parametrize("full", [False, True], ids=["BareJid", "FullJid"])
def test_RFC6121Section8_5_1_testLocalDomainNoSuchUserMessage(server, users, xmpp_client, full):
    """§8.5.1: a message to a local JID with no account is ignored or service-unavailable (ours)."""
    one = xmpp_client(server, users[0])
    one.watch("message_error")
    one.send_message(f"nobody-{users[0]}@{DOMAIN}" + ("/r" if full else ""), "anyone?")
    assert condition_of(one.next("message_error")) == "service-unavailable"


@pytest.mark.parametrize("kind", [None, "unavailable", "subscribe", "subscribed", "unsubscribe",
                                  "unsubscribed", "probe"])
@pytest.mark.parametrize("full", [False, True], ids=["BareJid", "FullJid"])
def test_RFC6121Section8_5_1_testLocalDomainNoSuchUserPresence(server, users, xmpp_client, kind, full):
    """§8.5.1: presence of any type to a local JID with no account is silently ignored: nothing
    comes back from that JID."""
    one = xmpp_client(server, users[0])
    nobody = f"nobody-{users[0]}@{DOMAIN}"
    send_presence(one, nobody + ("/r" if full else ""), kind)
    marker(one, one.jid, one)
    assert not [p for p in drain_queue(one, "presence") if p["from"].bare == nobody]
