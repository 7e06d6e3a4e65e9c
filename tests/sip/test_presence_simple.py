"""SIMPLE presence over real loopback sockets: SUBSCRIBE/NOTIFY (RFC 3856, RFC 6665) with PIDF from
the core's presence hub, and PUBLISH (RFC 3903) setting a binding's presence (docs/sip.md)."""
import gevent
import pytest

from convergence import Presence, hookimpl
from convergence.plugins.sip import pidf
from convergence.plugins.sip.message import make_response, parse_datagram
from convergence.store import roster
from convergence.testing import RecordingEndpoint

DOMAIN = "example.com"  # tests/sip/conftest.py's
PIDF = [("Content-Type", "application/pidf+xml")]


class Requests:
    """Records the on_subscription_request hook."""

    def __init__(self):
        self.asked = []

    @hookimpl
    def on_subscription_request(self, account, contact):
        self.asked.append((account, contact))


@pytest.fixture
def users(sip_server):
    server = sip_server(presence_min_expires=1)
    for name, password in (("alice", "secret"), ("bob", "hunter2")):
        server.core.add_account(name, password)
    return server


def authorized(client, request, user="alice", password="secret"):
    challenge = client.ask(request)
    assert challenge.status == 407, challenge
    return client.authorize(request, challenge, user, password)


def subscribe(client, to="bob", user="alice", password="secret", expires=600, headers=(),
              event="presence"):
    """An authenticated initial SUBSCRIBE: (its final response, the request sent)."""
    request = client.request("SUBSCRIBE", uri=f"sip:{to}@{DOMAIN}", user=user,
                             to=f"<sip:{to}@{DOMAIN}>",
                             headers=[("Event", event), ("Expires", str(expires)),
                                      ("Accept", "application/pidf+xml"),
                                      ("Contact", f"<sip:{user}@{client.host}:{client.port}>"),
                                      *headers])
    request = authorized(client, request, user, password)
    return client.ask(request), request


def in_dialog(client, request, response, expires):
    """A refresh or unsubscribe in the dialog ``response`` created."""
    again = client.request("SUBSCRIBE", uri=request.uri, call_id=request.call_id,
                           cseq=request.cseq.number + client.count, to=response.headers.get("To"),
                           headers=[("Event", "presence"), ("Expires", str(expires))])
    return client.ask(again)


def notify(client, status=200, timeout=5):
    """The next new NOTIFY, answered ``status`` (None: not answered). A retransmission of one
    answered already (same Call-ID and CSeq: the server's T1, 50 ms here, ran out before it read
    our answer, say during a garbage collection) is answered again and skipped, as a UAC does
    (RFC 3261 §17.2.1)."""
    answered = client.__dict__.setdefault("answered_notifies", set())
    with gevent.Timeout(timeout):
        while True:
            got = client.recv(timeout)
            assert got is not None, "no NOTIFY arrived"
            if getattr(got, "method", None) == "NOTIFY":
                if status:
                    client.send(make_response(got, status))
                key = (got.call_id, got.headers.get("CSeq"))
                if key in answered:
                    continue
                if status:
                    answered.add(key)
                return got


def state(request) -> Presence:
    assert request.headers.get("Content-Type") == "application/pidf+xml"
    return pidf.parse(request.body)


def wait_for(predicate, timeout=5):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.005)


def test_subscribe_gets_200_and_a_notify_on_every_change(users):
    client = users.client()
    response, request = subscribe(client)
    assert response.status == 200 and response.headers.get("Expires") == "600"
    assert response.to.tag and response.headers.get("Contact")
    first = notify(client)
    assert first.headers.get("Event") == "presence"
    assert first.headers.get("Subscription-State").startswith("active;expires=")
    assert first.to.tag == request.from_.tag and first.from_.tag == response.to.tag
    assert first.call_id == request.call_id
    assert state(first) == Presence(available=False)  # bob is offline

    bob = users.core.address("bob")
    phone = RecordingEndpoint(bob.with_resource("xmpp"), "xmpp")
    users.core.presence.login(phone)
    assert state(notify(client)) == Presence()
    phone.presence = Presence(show="away", status="at lunch")
    users.core.presence.update(phone)
    update = notify(client)
    assert b"<rpid:away/>" in update.body and state(update) == phone.presence
    assert int(update.cseq.number) > int(first.cseq.number)

    refreshed = in_dialog(client, request, response, 300)
    assert refreshed.status == 200 and refreshed.headers.get("Expires") == "300"
    assert state(notify(client)) == phone.presence  # a refresh sends the state again

    gone = in_dialog(client, request, response, 0)
    assert gone.status == 200
    last = notify(client)
    assert last.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not users.element.presence.dialogs
    users.core.presence.logout(phone)
    assert client.recv(0.3) is None  # nothing more after the end


def test_refusals(users):
    client = users.client()
    request = client.request("SUBSCRIBE", uri=f"sip:bob@{DOMAIN}", to=f"<sip:bob@{DOMAIN}>",
                             headers=[("Event", "dialog"), ("Contact", "<sip:a@127.0.0.1>")])
    refused = client.ask(request)
    assert refused.status == 489 and refused.headers.get("Allow-Events") == "presence"
    request = client.request("SUBSCRIBE", uri=f"sip:bob@{DOMAIN}", to=f"<sip:bob@{DOMAIN}>",
                             headers=[("Event", "presence"), ("Accept", "text/plain"),
                                      ("Contact", "<sip:a@127.0.0.1>")])
    assert client.ask(request).status == 406
    # an unknown account is only told to whoever authenticated, as MESSAGE does
    request = client.request("SUBSCRIBE", uri=f"sip:nobody@{DOMAIN}", to=f"<sip:nobody@{DOMAIN}>",
                             headers=[("Event", "presence"), ("Contact", "<sip:a@127.0.0.1>")])
    assert client.ask(request).status == 407
    assert subscribe(client, to="nobody")[0].status == 404
    too_brief = users.element.presence.settings["presence_min_expires"] = 60
    response, _ = subscribe(client, expires=10)
    assert response.status == 423 and response.headers.get("Min-Expires") == str(too_brief)
    assert subscribe(client, user="bob", password="wrong")[0].status == 407
    stray = client.request("SUBSCRIBE", uri=f"sip:bob@{DOMAIN}",
                           to=f"<sip:bob@{DOMAIN}>;tag=nope", headers=[("Event", "presence")])
    assert client.ask(stray).status == 481


def test_a_refresh_from_elsewhere_must_authenticate_as_the_watcher(users):
    client, other = users.client(), users.client(host="127.0.0.2")  # another source address
    response, request = subscribe(client)
    notify(client)

    def refresh(user, password, cseq):
        again = other.request("SUBSCRIBE", uri=request.uri, call_id=request.call_id, cseq=cseq,
                              to=response.headers.get("To"),
                              headers=[("Event", "presence"), ("Expires", "600")])
        again.headers.set("From", request.headers.get("From"))
        challenge = other.ask(again)
        assert challenge.status == 407
        return other.ask(other.authorize(again, challenge, user, password)).status

    assert refresh("bob", "hunter2", 10) == 403
    assert refresh("alice", "secret", 20) == 200
    assert notify(other).headers.get("Subscription-State").startswith("active;")


def test_limits_per_account_and_per_address(users):
    agent = users.element.presence
    agent.settings["max_subscriptions_per_account"] = 2
    client = users.client()
    for _ in range(2):
        assert subscribe(client)[0].status == 200
    assert subscribe(client)[0].status == 403  # alice holds 2 already
    assert subscribe(client, user="bob", password="hunter2", to="alice")[0].status == 200
    agent.settings["max_subscriptions_per_address"] = 3
    assert subscribe(client, user="bob", password="hunter2", to="alice")[0].status == 403


def test_expiry_ends_with_terminated_timeout(users):
    client = users.client()
    response, _ = subscribe(client, expires=1)
    assert response.headers.get("Expires") == "1"
    notify(client)
    last = notify(client, timeout=3)
    assert last.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not users.element.presence.dialogs and not users.element.presence.per_account


def test_fetch_with_expires_0(users):
    client = users.client()
    assert subscribe(client, expires=0)[0].status == 200
    assert notify(client).headers.get("Subscription-State") == "terminated;reason=timeout"
    assert not users.element.presence.dialogs


@pytest.mark.parametrize("status", [481, None])
def test_a_notify_refused_or_unanswered_ends_the_subscription(sip_server, status):
    users = sip_server(t1=0.01, t2=0.08)
    for name, password in (("alice", "secret"), ("bob", "hunter2")):
        users.core.add_account(name, password)
    client = users.client()
    subscribe(client)
    notify(client, status=status)  # 481, or never answered: Timer F (64*T1 = 0.64 s here)
    wait_for(lambda: not users.element.presence.dialogs, timeout=6)
    assert not users.element.presence.per_source


def test_a_subscribe_forked_to_us_twice_makes_two_dialogs(users):
    client = users.client()
    first, request = subscribe(client)
    notify(client)
    again = client.request("SUBSCRIBE", uri=request.uri, call_id=request.call_id,
                           cseq=request.cseq.number, headers=[
                               ("Event", "presence"), ("Contact", "<sip:a@127.0.0.1>"),
                               ("Proxy-Authorization", request.headers.get("Proxy-Authorization"))])
    again.headers.set("From", request.headers.get("From"))  # same From tag, another branch
    response = client.ask(authorized(client, again))
    assert response.status == 200 and response.to.tag != first.to.tag
    assert len(users.element.presence.dialogs) == 2


def test_a_deleted_account_ends_the_subscriptions_to_and_from_it(users):
    client = users.client()
    subscribe(client)  # alice watches bob
    notify(client)
    subscribe(client, user="bob", password="hunter2", to="alice")  # bob watches alice
    notify(client)
    users.core.delete_account("bob")
    states = {notify(client).headers.get("Subscription-State") for _ in range(2)}
    assert states == {"terminated;reason=noresource", "terminated;reason=rejected"}
    assert not users.element.presence.dialogs
    assert subscribe(client)[0].status == 404  # no such account any more


def test_a_block_list_refuses_watchers_and_ends_their_subscriptions(users):
    """XEP-0191 through the core's ``screen_presence`` and ``on_screen_changed`` hooks, answered
    by the XMPP plugin's block lists: a block ends the subscriptions both ways with a NOTIFY
    ``terminated;reason=rejected`` without a body (RFC 6665 §4.2.2), a new SUBSCRIBE across the
    block gets 403 (§4.2.1.1); watching oneself stays allowed; after the unblock it is 200."""
    client = users.client()
    subscribe(client)  # alice watches bob
    notify(client)
    subscribe(client, user="bob", password="hunter2", to="alice")  # bob watches alice
    notify(client)
    lists = users.core.pm.get_plugin("xmpp:server").service.blocking
    alice, bob = users.core.address("alice"), users.core.address("bob")
    lists.block(bob, [alice])
    ended = [notify(client) for _ in range(2)]
    assert [n.headers.get("Subscription-State") for n in ended] == ["terminated;reason=rejected"] * 2
    assert not any(n.body for n in ended)
    assert not users.element.presence.dialogs
    assert subscribe(client)[0].status == 403  # the blocked one, and the one who blocks
    assert subscribe(client, user="bob", password="hunter2", to="alice")[0].status == 403
    assert subscribe(client, to="alice")[0].status == 200
    notify(client)
    lists.unblock(bob, None)
    assert subscribe(client)[0].status == 200
    assert notify(client).headers.get("Subscription-State").startswith("active;")


def test_shutdown_terminates_with_probation(users):
    client = users.client()
    subscribe(client)
    notify(client)
    users.element.presence.shutdown()
    last = notify(client)
    assert last.headers.get("Subscription-State") == "terminated;reason=probation;retry-after=30"


def test_service_users_and_self_can_be_watched(users):
    client = users.client()
    assert subscribe(client, to="echo")[0].status == 200
    assert state(notify(client)) == Presence()  # echo is always available
    assert subscribe(client, to="alice")[0].status == 200
    assert state(notify(client)).available is False


# -- roster rules --
def test_without_the_shared_roster_a_watcher_waits_for_approval(sip_server):
    requests = Requests()
    server = sip_server(plugins={"requests": requests}, presence_min_expires=1)
    core = server.core
    core.pm.register(_NoSharing(), "no-sharing")
    for name, password in (("alice", "secret"), ("bob", "hunter2")):
        core.add_account(name, password)
    client = server.client()
    response, request = subscribe(client)
    assert response.status == 202
    pending = notify(client)
    assert pending.headers.get("Subscription-State").startswith("pending;")
    assert not pending.body  # nothing about bob until he agrees
    assert requests.asked == [(core.address("alice"), core.address("bob"))]
    roster.update(core.db, "alice", "bob@example.com", subscription="to")  # bob approved
    assert in_dialog(client, request, response, 600).status == 200
    active = notify(client)
    assert active.headers.get("Subscription-State").startswith("active;")
    assert state(active).available is False


def test_a_pending_subscription_turns_active_when_the_roster_allows_it(sip_server):
    server = sip_server(presence_min_expires=1)
    core = server.core
    core.pm.register(_NoSharing(), "no-sharing")
    for name, password in (("alice", "secret"), ("bob", "hunter2")):
        core.add_account(name, password)
    server.element.presence.pending_check = 0.05
    client = server.client()
    assert subscribe(client)[0].status == 202
    assert notify(client).headers.get("Subscription-State").startswith("pending;")
    roster.update(core.db, "alice", "bob@example.com", subscription="to")  # approved elsewhere
    active = notify(client)  # no refresh, no presence change: the periodic look found it
    assert active.headers.get("Subscription-State").startswith("active;")
    assert not server.element.presence.pending


class _NoSharing:
    @hookimpl(tryfirst=True)
    def share_roster(self):
        return False


# -- PUBLISH --
def publish(client, body, etag=None, expires=600, user="alice", password="secret",
            content_type="application/pidf+xml"):
    headers = [("Event", "presence"), ("Expires", str(expires))]
    if content_type:
        headers.append(("Content-Type", content_type))
    if etag:
        headers.append(("SIP-If-Match", etag))
    request = client.request("PUBLISH", uri=f"sip:{user}@{DOMAIN}", user=user,
                             to=f"<sip:{user}@{DOMAIN}>", body=body, headers=headers)
    return client.ask(authorized(client, request, user, password))


def document(presence):
    return pidf.build(f"sip:alice@{DOMAIN}", presence)


def test_publish_sets_the_phones_presence_and_watchers_see_it(users):
    phone, watcher = users.client(), users.client("tcp")
    assert phone.register("alice", "secret").status == 200
    (binding,) = users.core.presence.endpoints(users.core.address("alice"))
    assert subscribe(watcher, to="alice", user="bob", password="hunter2")[0].status == 200
    assert state(notify(watcher)) == Presence()

    busy = Presence(show="dnd", status="in a meeting")
    response = publish(phone, document(busy))
    assert response.status == 200 and response.headers.get("Expires") == "600"
    etag = response.headers.get("SIP-ETag")
    assert binding.presence == busy
    assert state(notify(watcher)) == busy

    refreshed = publish(phone, b"", etag=etag, content_type=None)  # a refresh: no body
    assert refreshed.status == 200 and refreshed.headers.get("SIP-ETag") != etag
    assert publish(phone, b"", etag=etag, content_type=None).status == 412  # the old tag
    etag = refreshed.headers.get("SIP-ETag")
    modified = publish(phone, document(Presence(show="away")), etag=etag)
    assert modified.status == 200 and binding.presence == Presence(show="away")
    assert state(notify(watcher)) == Presence(show="away")

    removed = publish(phone, b"", etag=modified.headers.get("SIP-ETag"), expires=0,
                      content_type=None)
    assert removed.status == 200 and binding.presence == Presence()
    assert state(notify(watcher)) == Presence()
    assert not users.element.presence.publications


def test_publish_expires_and_bad_bodies(users):
    phone = users.client()
    assert phone.register("alice", "secret").status == 200
    (binding,) = users.core.presence.endpoints(users.core.address("alice"))
    assert publish(phone, b"hello", content_type="text/plain").status == 415
    assert publish(phone, b"<presence/>").status == 400
    bomb = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]>'
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf">&a;</presence>')
    assert publish(phone, bomb).status == 400
    assert publish(phone, b"<x/>" * 3000).status == 413
    assert publish(phone, b"").status == 400
    other = users.client()  # no registration over this flow
    assert publish(other, document(Presence(show="away"))).status == 403
    assert publish(phone, document(Presence(show="xa")), expires=1).status == 200
    assert binding.presence == Presence(show="xa")
    wait_for(lambda: binding.presence == Presence(), timeout=3)
    assert not users.element.presence.publications


def test_publish_closed_makes_the_binding_unavailable(users):
    phone = users.client()
    assert phone.register("alice", "secret").status == 200
    alice = users.core.address("alice")
    assert publish(phone, document(Presence(available=False))).status == 200
    assert not users.core.presence.presence(alice).available
    assert publish(phone, document(Presence())).status == 200
    assert users.core.presence.presence(alice).available


def test_a_stopping_server_tells_its_watchers_to_come_back(sip_process):
    """SIGTERM: each watcher gets terminated;reason=probation before the socket closes (the
    subscriptions are not stored, docs/sip.md)."""
    server = sip_process()
    server.cli("user", "add", "alice", "--password", "secret")
    client = server.client()
    response, _ = subscribe(client, to="alice")  # her own presence
    assert response.status == 200
    notify(client)
    assert server.core.stop() == 0
    last = notify(client)
    assert last.headers.get("Subscription-State") == "terminated;reason=probation;retry-after=30"


def test_fuzzed_presence_requests_are_answered_well_never_500(users):
    """Seeded mutations (tests/sip/test_fuzz.py's mutator) of an in-dialog refresh, an initial
    SUBSCRIBE and a PUBLISH: each is answered with well-formed SIP other than 500, or dropped
    (the server shares this gevent hub: an answer comes at once, 50 ms is plenty)."""
    from random import Random

    from .test_fuzz import assert_well_formed, mutate
    client = users.client()
    response, request = subscribe(client)
    notify(client)
    refresh = client.request("SUBSCRIBE", uri=request.uri, call_id=request.call_id, cseq=1000,
                             to=response.headers.get("To"),
                             headers=[("Event", "presence;id=1"), ("Expires", "600"),
                                      ("Contact", f"<sip:alice@{client.host}:{client.port}>")])
    refresh.headers.set("From", request.headers.get("From"))
    seeds = [bytes(refresh), bytes(client.request(
        "SUBSCRIBE", uri=f"sip:bob@{DOMAIN}", to=f"<sip:bob@{DOMAIN}>",
        headers=[("Event", "presence"), ("Accept", "application/pidf+xml, text/plain"),
                 ("Contact", "<sip:a@127.0.0.1>"), ("Expires", "60")])), bytes(client.request(
        "PUBLISH", uri=f"sip:alice@{DOMAIN}", headers=[
            ("Event", "presence"), ("Content-Type", "application/pidf+xml"),
            ("SIP-If-Match", "x")], body=document(Presence(show="away", status="x"))))]
    rng, answered = Random(16), 0
    for n in range(300):
        data = mutate(rng.choice(seeds), rng)
        data = data.replace(b"CSeq: 1000 ", b"CSeq: %d " % (1001 + n))  # a new request each time
        client.send(data)
        while True:  # its answer; the NOTIFYs of refreshes that succeed are answered and skipped
            got = raw(client)
            if got is None or not got.startswith(b"NOTIFY"):
                break
            client.send(make_response(parse_datagram(got), 200))
        if got is not None:
            assert_well_formed(got)
            assert not got.startswith(b"SIP/2.0 500"), (data, got)
            answered += 1
    assert answered > 250, answered  # most mutations still parse


def raw(client, timeout=0.05):
    """The next datagram as bytes, or None."""
    with gevent.Timeout(timeout, False):
        return client.sock.recvfrom(70000)[0]
    return None
