"""Routing through resolve_recipient to endpoints and the offline store (RFC 6121 §8.5, XEP-0160)."""
from dataclasses import replace

import gevent
import gevent.event
import pytest

from convergence import Message, Presence, RoutingError
from convergence.store import offline
from convergence.hookspecs import hookimpl
from convergence.testing import RecordingEndpoint


@pytest.fixture
def alice(core):
    return core.add_account("alice", "pw")


def msg(core, to, body="hi", **kw):
    return Message(core.address("bob", "laptop"), to, body, **kw)


def test_bare_address_reaches_every_available_endpoint(core, alice):
    xmpp = RecordingEndpoint(alice.with_resource("phone"), "xmpp")
    sip = RecordingEndpoint(alice.with_resource("sip-1"), "sip")
    away = RecordingEndpoint(alice.with_resource("hidden"), "xmpp", Presence(priority=-1))
    for e in (xmpp, sip, away):
        core.presence.login(e)
    assert core.send(msg(core, alice)) == "delivered"
    assert [len(e.received) for e in (xmpp, sip, away)] == [1, 1, 0]


def test_full_address_reaches_only_that_endpoint(core, alice):
    one, two = (RecordingEndpoint(alice.with_resource(r)) for r in ("one", "two"))
    core.presence.login(one)
    core.presence.login(two)
    core.send(msg(core, alice.with_resource("two")))
    assert (len(one.received), len(two.received)) == (0, 1)


def test_unknown_resource_falls_back_to_bare(core, alice):  # RFC 6121 §8.5.3.2.1
    one = RecordingEndpoint(alice.with_resource("one"))
    core.presence.login(one)
    core.send(msg(core, alice.with_resource("gone")))
    assert len(one.received) == 1


def test_offline_messages_are_stored_and_delivered_in_order(core, alice):
    for n in range(3):
        assert core.send(msg(core, alice, f"m{n}")) == "stored"
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    assert core.router.deliver_stored(alice) == 3
    assert [m.body for m in phone.received] == ["m0", "m1", "m2"]
    assert all(m.stamp is not None for m in phone.received)
    assert offline.count(core.db, "alice") == 0


def test_a_stored_message_comes_back_whole(core, alice):  # XEP-0160, stamped as XEP-0203
    sent = Message(core.address("bob", "laptop"), alice.with_resource("gone"), "body", "subject",
                   "thread-1", "chat", "id-1")
    assert core.send(sent) == "stored"
    [(_, kept)] = offline.pending(core.db, "alice")
    assert kept.stamp is not None and replace(kept, stamp=None) == sent


def test_a_refused_stored_message_stays_stored(core, alice):
    core.send(msg(core, alice, "kept"))
    phone = RecordingEndpoint(alice.with_resource("phone"))
    phone.refuse = True
    core.presence.login(phone)
    assert core.router.deliver_stored(alice) == 0
    assert offline.count(core.db, "alice") == 1


def test_endpoint_refusing_means_stored_not_lost(core, alice):
    phone = RecordingEndpoint(alice.with_resource("phone"))
    phone.refuse = True
    core.presence.login(phone)
    assert core.send(msg(core, alice)) == "stored"


def test_offline_store_is_bounded(make_core):
    core = make_core({"server": {"max_offline_messages": 2}})
    alice = core.add_account("alice", "pw")
    core.send(msg(core, alice))
    core.send(msg(core, alice))
    with pytest.raises(RoutingError) as info:
        core.send(msg(core, alice))
    assert info.value.condition == "resource-constraint"


def test_unknown_local_account_and_remote_domain(core):
    with pytest.raises(RoutingError) as info:
        core.send(msg(core, core.address("nobody")))
    assert info.value.condition == "item-not-found"
    with pytest.raises(RoutingError) as info:
        core.send(msg(core, core.address("bob").__class__("x", "elsewhere.example")))
    assert info.value.condition == "remote-server-not-found"


def test_error_messages_for_offline_accounts_are_discarded(core, alice):  # RFC 6121 §8.5.2.2.1
    assert core.send(msg(core, alice, type="error")) == "discarded"
    assert offline.count(core.db, "alice") == 0


def test_groupchat_to_a_bare_account_is_refused(core, alice):
    with pytest.raises(RoutingError, match="service-unavailable"):
        core.send(msg(core, alice, type="groupchat"))


@pytest.mark.parametrize("fields", [dict(body=""), dict(body="", type="headline"),
                                    dict(body="news", type="headline")],
                         ids=["no-body", "headline-no-body", "headline"])
def test_what_is_not_worth_storing_is_discarded(core, alice, fields):  # XEP-0160, RFC 6121 §8.5.2.2.1
    assert core.send(msg(core, alice, **fields)) == "discarded"
    assert offline.count(core.db, "alice") == 0


def test_a_subject_alone_is_stored(core, alice):
    assert core.send(msg(core, alice, "", subject="topic")) == "stored"


@pytest.mark.parametrize("body, hint, outcome", [("hi", False, "discarded"), ("", True, "stored")],
                         ids=["no-store", "store"])
def test_store_hints_override_the_body_rule(core, alice, body, hint, outcome):  # XEP-0334
    class Hinted(Message):
        store_hint = hint
    assert core.send(Hinted(core.address("bob", "laptop"), alice, body)) == outcome
    assert offline.count(core.db, "alice") == (outcome == "stored")


def test_error_messages_reach_only_a_named_live_resource(core, alice):  # RFC 6121 §8.5.2.1.1
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    assert core.send(msg(core, alice, type="error")) == "discarded"
    assert core.send(msg(core, alice.with_resource("gone"), type="error")) == "discarded"
    assert core.send(msg(core, alice.with_resource("phone"), type="error")) == "delivered"
    assert len(phone.received) == 1


def test_headline_to_a_gone_resource_is_discarded(core, alice):  # RFC 6121 §8.5.3.2.1
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    assert core.send(msg(core, alice.with_resource("gone"), type="headline")) == "discarded"
    assert core.send(msg(core, alice, type="headline")) == "delivered"
    assert len(phone.received) == 1


def test_a_message_larger_than_a_protocol_on_its_path_is_refused_whole(core, alice):
    core.router.limit("sip", 10)
    xmpp = RecordingEndpoint(alice.with_resource("laptop"), "xmpp")
    sip = RecordingEndpoint(alice.with_resource("sip-1"), "sip")
    core.presence.login(xmpp)
    assert core.send(msg(core, alice, "x" * 40)) == "delivered"  # no SIP endpoint on the path
    core.presence.login(sip)
    with pytest.raises(RoutingError) as refused:
        core.send(msg(core, alice, "ü" * 6))  # 12 bytes of UTF-8 in 6 characters
    assert refused.value.condition == "policy-violation" and "12 bytes" in refused.value.text
    assert (len(xmpp.received), sip.received) == (1, [])  # nobody got a truncated copy
    assert core.send(msg(core, alice, "12345", subject="12345")) == "delivered"  # exactly 10


def test_a_message_stored_for_later_fits_every_limited_protocol(core, alice):
    core.router.limit("sip", 10)
    with pytest.raises(RoutingError, match="sip carries at most 10"):
        core.send(msg(core, alice, "x" * 11))
    assert offline.count(core.db, "alice") == 0
    assert core.send(msg(core, alice, "x" * 10)) == "stored"


def test_failed_is_an_error_reply_naming_the_condition(core):
    original = msg(core, core.address("alice"), thread="t1")
    report = original.failed("recipient-unavailable", "phone is busy")
    assert (report.type, report.error, report.body) == ("error", "recipient-unavailable", "phone is busy")
    assert (report.sender, report.recipient, report.thread) == (original.recipient, original.sender, "t1")
    assert report.id == original.id  # RFC 6120 §8.3.1
    assert report.reply().error is None


class Unflushed(RecordingEndpoint):
    """Takes messages but never hands them to its transport: its connection died meanwhile."""

    def __init__(self, address, written=0):
        super().__init__(address)
        self.written = written  # how many flushes succeed before the connection dies

    def flush(self, timeout):
        self.written -= 1
        return self.written >= 0


def test_a_stored_message_is_deleted_only_once_an_endpoint_wrote_it(core, alice):
    for n in range(5):
        core.send(msg(core, alice, f"m{n}"))
    dying = Unflushed(alice.with_resource("phone"), written=2)
    core.presence.login(dying)
    assert core.router.deliver_stored(alice) == 2
    assert [m.body for _, m in offline.pending(core.db, "alice")] == ["m2", "m3", "m4"]
    core.presence.logout(dying)
    desk = RecordingEndpoint(alice.with_resource("desk"))
    core.presence.login(desk)
    assert core.router.deliver_stored(alice) == 3
    assert [m.body for m in desk.received] == ["m2", "m3", "m4"]


def test_one_endpoint_that_wrote_it_is_enough(core, alice):
    core.send(msg(core, alice, "kept once"))
    for endpoint in (Unflushed(alice.with_resource("a")), RecordingEndpoint(alice.with_resource("b"))):
        core.presence.login(endpoint)
    assert core.router.deliver_stored(alice) == 1
    assert offline.count(core.db, "alice") == 0


def test_a_backlog_longer_than_a_page_is_delivered_page_by_page(core, alice, monkeypatch):
    monkeypatch.setattr(core.router, "PAGE", 2)
    for n in range(5):
        core.send(msg(core, alice, f"m{n}"))
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    assert core.router.deliver_stored(alice) == 5
    assert [m.body for m in phone.received] == [f"m{n}" for n in range(5)]
    assert offline.count(core.db, "alice") == 0


def test_a_message_an_endpoint_gives_back_is_stored(core, alice):
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    assert core.send(msg(core, alice, "queued, then the connection died")) == "delivered"
    core.presence.logout(phone)
    core.router.returned(phone.received[0])
    [(_, kept)] = offline.pending(core.db, "alice")
    assert kept.body == "queued, then the connection died"
    core.router.returned(msg(core, alice, type="headline"))  # not worth storing: dropped
    assert offline.count(core.db, "alice") == 1


def test_a_message_given_back_while_the_account_is_online_elsewhere_goes_there(core, alice, monkeypatch):
    """A client that reconnected before its old connection finished closing gets what the old
    one gives back at once, not at its next login."""
    old, new = (RecordingEndpoint(alice.with_resource(r)) for r in ("old", "new"))
    core.presence.login(old)
    assert core.send(msg(core, alice, "taken by the old connection")) == "delivered"
    core.presence.login(new)
    core.presence.logout(old)
    delivered = gevent.event.AsyncResult()  # the delivery runs in a greenlet of its own: its result
    deliver_stored = core.router.deliver_stored
    monkeypatch.setattr(core.router, "deliver_stored", lambda account: delivered.set(deliver_stored(account)))
    core.router.returned(old.received[0])
    assert delivered.get(timeout=5) == 1
    assert [m.body for m in new.received] == ["taken by the old connection"]
    assert offline.count(core.db, "alice") == 0


def test_a_backlog_asked_for_while_it_is_being_sent_goes_round_again(core, alice):
    """Rows stored while a delivery runs are not left behind until the next login."""
    offline.store(core.db, "alice", msg(core, alice, "stored 1"), 10)

    class Storing(RecordingEndpoint):  # while it takes a message, another one is stored
        def deliver(self, message):
            super().deliver(message)
            if message.body == "stored 1":
                offline.store(core.db, "alice", msg(core, alice, "stored 2"), 10)
                assert core.router.deliver_stored(alice) == 0  # busy: the running one goes again
    storing = Storing(alice.with_resource("desk"))
    core.presence.login(storing)
    assert core.router.deliver_stored(alice) == 2
    assert [m.body for m in storing.received] == ["stored 1", "stored 2"]


def test_a_message_refused_while_an_endpoint_gives_back_is_stored_after_what_it_gives_back(core, alice):
    """The store keeps an account's messages in order across a closing connection: the message
    the closing session refused waits until the session has given back the earlier ones."""
    core.router.hold(alice)  # a session of alice's starts closing, with messages to give back
    later = gevent.spawn(core.send, msg(core, alice, "refused by the closing session"))
    gevent.idle()  # it has reached the store and waits
    assert offline.count(core.db, "alice") == 0
    core.router.returned(msg(core, alice, "given back"))
    core.router.release(alice)
    assert later.get(timeout=5) == "stored"
    assert [m.body for _, m in offline.pending(core.db, "alice")] == ["given back",
                                                                     "refused by the closing session"]


class _Plugin:
    """A plugin that records the hooks the router calls on it."""

    def __init__(self, calls, name, route=None):
        self.calls, self.name, self.route = calls, name, route

    @hookimpl
    def resolve_recipient(self, address):
        self.calls.append((self.name, "resolve", address.local))
        return self.route

    @hookimpl
    def on_message(self, message):
        self.calls.append((self.name, "on_message", message.body))


class _FirstResolver(_Plugin):
    @hookimpl(tryfirst=True)
    def resolve_recipient(self, address):
        return super().resolve_recipient(address)


def test_the_router_calls_hooks_in_pluggys_order_and_sees_plugins_that_come_later(core, alice):
    """The router calls resolve_recipient, screen_message and on_message itself
    (PluginManager.direct): the same order and first answer as pluggy, renewed when plugins change."""
    phone = RecordingEndpoint(alice.with_resource("phone"))
    core.presence.login(phone)
    calls = []
    core.pm.register(_Plugin(calls, "late"), name="late")
    assert core.send(msg(core, alice, "one")) == "delivered"
    assert ("late", "on_message", "one") in calls
    calls.clear()
    first = _FirstResolver(calls, "first")
    core.pm.register(first, name="first")
    core.send(msg(core, alice, "two"))
    assert [c[0] for c in calls if c[1] == "resolve"][0] == "first"  # tryfirst: asked before the others
    assert ("late", "on_message", "two") in calls and ("first", "on_message", "two") in calls
    core.pm.unregister(name="late")
    calls.clear()
    core.send(msg(core, alice, "three"))
    assert [c for c in calls if c[0] == "late"] == []


class _Wrapper:
    def __init__(self, seen):
        self.seen = seen

    @hookimpl(wrapper=True)
    def on_message(self, message):
        self.seen.append(message.body)
        return (yield)


def test_a_hook_wrapper_still_runs_when_the_router_calls_hooks_itself(core, alice):
    seen = []
    core.pm.register(_Wrapper(seen), name="wrapper")
    core.send(msg(core, alice, "stored for later"))
    assert seen == ["stored for later"]
