"""RFC 3428 MESSAGE through the core router, over real loopback sockets."""
import gevent
import pytest

from convergence import Message
from convergence.store import offline
from convergence.testing import RecordingEndpoint

DOMAIN = "example.com"  # tests/sip/conftest.py's


@pytest.fixture
def users(sip_server):
    server = sip_server()
    for name, password in (("alice", "secret"), ("bob", "hunter2")):
        server.core.add_account(name, password)
    return server


def message(client, to, body=b"hello", user="alice", password="secret",
            content_type="text/plain;charset=UTF-8", headers=()):
    """MESSAGE with digest (407 first) to ``to`` (a user here, or ``user@domain``): the final
    response."""
    aor = f"sip:{to}" if "@" in to else f"sip:{to}@{DOMAIN}"
    request = client.request("MESSAGE", uri=aor, user=user, to=f"<{aor}>", body=body,
                             headers=[("Content-Type", content_type), *headers])
    challenge = client.ask(request)
    assert challenge.status == 407 and challenge.headers.get("Proxy-Authenticate")
    return client.ask(client.authorize(request, challenge, user, password))


def received(client, method="MESSAGE"):
    """The next request the client gets (responses to earlier requests skipped)."""
    while True:
        got = client.recv()
        assert got is not None, f"no {method} arrived"
        if getattr(got, "method", None) == method:
            return got


def wait_for(predicate, timeout=5):
    """Let the server run until ``predicate()`` holds (it shares this gevent hub)."""
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.005)


def answer(client, request, status=200):
    client.send(make_reply(request, status))


def make_reply(request, status):
    from convergence.plugins.sip.message import make_response
    return make_response(request, status, to_tag="uas")


def test_message_between_two_sip_users(users):
    alice, bob = users.client(), users.client("tcp")
    assert alice.register("alice", "secret").status == 200
    assert bob.register("bob", "hunter2").status == 200
    response = message(alice, "bob", "grüß dich".encode())
    assert response.status == 200
    incoming = received(bob)  # over bob's own TCP connection
    assert incoming.body.decode() == "grüß dich"
    assert incoming.from_.uri == f"sip:alice@{DOMAIN}" and incoming.to.uri == f"sip:bob@{DOMAIN}"
    assert incoming.uri == f"sip:bob@{bob.host}:{bob.port};transport=tcp"
    answer(bob, incoming)


def test_unauthenticated_and_impersonating_senders(users):
    client = users.client()
    request = client.request("MESSAGE", uri=f"sip:bob@{DOMAIN}", body=b"x",
                             headers=[("Content-Type", "text/plain")])
    assert client.ask(request).status == 407
    response = message(client, "bob", user="bob", password="secret")  # wrong password
    assert response.status == 407
    request = client.request("MESSAGE", uri=f"sip:bob@{DOMAIN}", user="bob", body=b"x")
    challenge = client.ask(request)
    forged = client.authorize(request, challenge, "alice", "secret")  # From bob, creds alice
    assert client.ask(forged).status == 403


def test_stored_when_offline_then_delivered_on_register(users):
    alice, bob = users.client(), users.client()
    assert message(alice, "bob", b"while you were out").status == 202
    assert offline.count(users.core.db, "bob") == 1
    assert bob.register("bob", "hunter2").status == 200
    incoming = received(bob)
    assert incoming.body == b"while you were out"
    answer(bob, incoming)
    assert offline.count(users.core.db, "bob") == 0


def test_unknown_account_is_404(users):
    assert message(users.client(), "nobody").status == 404


def test_another_domain_without_federation_is_404(users):
    """A MESSAGE to another domain goes to the core's router; with no route for that domain
    (here no XMPP server-to-server) it is ``remote-server-not-found`` (RFC 7247 §8.1: 404)."""
    response = message(users.client(), "bob@elsewhere.example.net")
    assert response.status == 404


@pytest.mark.parametrize("content_type, body, status, text", [
    ("text/plain", "naïve".encode(), 200, "naïve"),  # UTF-8 by default
    ("text/plain; charset=ISO-8859-1", "naïve".encode("latin-1"), 200, "naïve"),
    ("text/html", b"<p>Hello <b>there</b></p><script>x()</script><p>bye&amp;</p>", 200,
     "Hello there\nbye&"),
    ("text/plain;charset=utf-8", b"\xff\xfe", 400, None),
    ("text/plain;charset=klingon", b"x", 415, None),
    ("application/octet-stream", b"x", 415, None),
])
def test_content_types(users, content_type, body, status, text):
    bob = RecordingEndpoint(users.core.address("bob", "phone"))
    users.core.presence.login(bob)
    response = message(users.client(), "bob", body, content_type=content_type)
    assert response.status == status
    if text is None:
        assert bob.received == []
        if status == 415:
            assert response.headers.get_all("Accept") == ["text/plain", "text/html"]
    else:
        (got,) = bob.received
        assert (got.body, got.type, got.sender) == (text, "chat", users.core.address("alice"))


def test_echo_answers_to_the_phone_it_came_from(users):
    alice = users.client()
    assert alice.register("alice", "secret").status == 200
    assert message(alice, "echo", b"ping").status == 200
    incoming = received(alice)
    assert incoming.body == b"ping" and incoming.from_.uri == f"sip:echo@{DOMAIN}"
    answer(alice, incoming)


def test_outbound_message_is_retransmitted_over_udp(users):
    bob = users.client()
    assert bob.register("bob", "hunter2").status == 200
    users.core.send(Message(users.core.address("alice"), users.core.address("bob"), "again?"))
    first, second = received(bob), received(bob)  # Timer E: T1 = 50 ms here
    assert bytes(first) == bytes(second)
    answer(bob, second)


def test_failed_delivery_is_reported_to_the_sender(users):
    alice, bob = users.client(), users.client()
    assert alice.register("alice", "secret").status == 200
    assert bob.register("bob", "hunter2").status == 200
    xmpp_alice = RecordingEndpoint(users.core.address("alice", "laptop"))
    users.core.presence.login(xmpp_alice)
    users.core.send(Message(xmpp_alice.address, users.core.address("bob"), "are you there?"))
    incoming = received(bob)
    answer(bob, incoming, 486)
    wait_for(lambda: xmpp_alice.received)
    (report,) = xmpp_alice.received
    assert (report.type, report.error) == ("error", "recipient-unavailable")  # RFC 7247 §8.2
    assert report.recipient == xmpp_alice.address and "486 Busy Here" in report.body


@pytest.mark.parametrize("status, condition", [
    (404, "item-not-found"), (408, "remote-server-timeout"), (415, "not-acceptable"),
    (480, "recipient-unavailable"), (503, "service-unavailable"), (302, "redirect"),
    (499, "bad-request"), (599, "internal-server-error"), (603, "service-unavailable")])
def test_sip_failures_map_to_xmpp_conditions(status, condition):  # RFC 7247 §8.2
    from convergence.plugins.sip.messaging import condition_of_status
    assert condition_of_status(status) == condition


def test_thread_and_call_id_map_both_ways(users):  # RFC 7572 §4, §5
    alice = users.client()
    assert alice.register("alice", "secret").status == 200
    laptop = RecordingEndpoint(users.core.address("bob", "laptop"))
    users.core.presence.login(laptop)
    sent = alice.request("MESSAGE", uri=f"sip:bob@{DOMAIN}", user="alice", to=f"<sip:bob@{DOMAIN}>",
                         body=b"hi", headers=[("Content-Type", "text/plain"), ("Subject", "plans")])
    challenge = alice.ask(sent)
    assert alice.ask(alice.authorize(sent, challenge, "alice", "secret")).status == 200
    (got,) = laptop.received
    assert (got.thread, got.subject, got.type) == (sent.call_id, "plans", "chat")
    for thread, same in (("th-42.x", True), ("two words", False)):
        users.core.send(Message(laptop.address, users.core.address("alice"), "re", thread=thread))
        incoming = received(alice)
        assert (incoming.call_id == thread) is same
        answer(alice, incoming)


def test_a_message_too_big_for_sip_is_refused_before_the_phone(users):
    bob = users.client()
    assert bob.register("bob", "hunter2").status == 200
    limit = users.core.router.limits["sip"]
    assert limit == 65535 - 2048
    from convergence import RoutingError
    with pytest.raises(RoutingError) as refused:
        users.core.send(Message(users.core.address("alice"), users.core.address("bob"), "x" * (limit + 1)))
    assert refused.value.condition == "policy-violation"
    users.core.send(Message(users.core.address("alice"), users.core.address("bob"), "x" * limit))
    incoming = received(bob)  # the largest allowed body still fits one SIP message
    assert len(incoming.body) == limit
    answer(bob, incoming)


def test_failure_of_a_message_from_a_phone_comes_back_to_the_phone(users):
    alice, bob = users.client(), users.client()
    assert alice.register("alice", "secret").status == 200
    assert bob.register("bob", "hunter2").status == 200
    assert message(alice, "bob", b"knock knock").status == 200
    answer(bob, received(bob), 480)
    report = received(alice)
    assert b"480" in report.body and report.from_.uri == f"sip:bob@{DOMAIN}"
    answer(alice, report)


def test_message_to_a_tcp_phone_whose_connection_closed_opens_a_new_one(users):
    from gevent.server import StreamServer
    from convergence.plugins.sip.message import StreamParser
    got = []

    def phone(sock, peer):  # bob's UA listening on its contact address
        parser = StreamParser()
        while not got:
            data = sock.recv(65536)
            if not data:
                return
            parser.feed(data)
            got.extend(parser)
        sock.sendall(bytes(make_reply(got[0], 200)))

    listener = StreamServer(("127.0.0.1", 0), phone)
    listener.start()
    try:
        bob = users.client("tcp")
        contact = f"<sip:bob@127.0.0.1:{listener.address[1]};transport=tcp>"
        assert bob.register("bob", "hunter2", contact=contact).status == 200
        bob.close()
        wait_for(lambda: not users.element.transport.connections)
        assert message(users.client(), "bob", b"over a new connection").status == 200
        wait_for(lambda: got)
        assert got[0].method == "MESSAGE" and got[0].body == b"over a new connection"
    finally:
        listener.stop()
