"""SIP over real loopback UDP, TCP and TLS: framing, bad input, local answers, retransmissions."""
import os
import time
from pathlib import Path

import gevent
import pytest
from gevent.event import Event

from convergence.plugins.sip.message import (Headers, ParseError, Request, Response, make_response,
                                             parse_datagram)

DOMAIN = "example.com"  # tests/sip/conftest.py's

TORTURE = Path(__file__).resolve().parents[2].parent / "shared" / "rfc4475"
TORTURE_FILES = sorted(TORTURE.glob("*.dat"))

#: What the element answers to the RFC 4475 messages its parser accepts (domain example.com).
ANSWERS = {
    "bext01": 420,  # §3.3.5: Proxy-Require not supported
    "regaut01": 401,  # §3.3.7: challenged with a scheme we support
    "zeromf": 483,  # §3.3.11
    "intmeth": 501,  # an unknown method
    "cparam01": 401, "cparam02": 401, "regescrt": 401, "dblreq": 401,  # registrar: digest first
    "inv2543": 404, "invut": 404, "sdp01": 404, "baddate": 404,  # INVITE to an unknown user
    "badaspec": 403, "baddn": 403, "mpart01": 403,  # example.org: not our domain (no relay)
    "wsinv": 403, "esc01": 403, "esc02": 403,  # other hosts
    "badbranch": 404, "semiuri": 404, "longreq": 404,
    "lwsdisp": 407, "transports": 407,  # From a local user: prove it first
    "escnull": 401, "unksm2": 401,
}


def probe(client):
    """OPTIONS to the server: alive and answering?"""
    request = client.request("OPTIONS")
    return client.ask(request)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_to_the_server(sip_server, transport):
    server = sip_server()
    client = server.client(transport)
    response = probe(client)
    assert response.status == 200
    assert {"INVITE", "MESSAGE", "REGISTER", "OPTIONS"} <= set(response.headers.get_all("Allow"))
    assert response.headers.get_all("Accept") == ["text/plain", "text/html"]
    assert "Supported" in response.headers
    assert response.to.tag  # §8.2.6.2


def test_options_over_tls_to_a_real_server(sip_process):
    server = sip_process(tls=True)
    client = server.client("tls")
    assert probe(client).status == 200
    client.send(b"\r\n\r\n")
    assert client.sock.recv(10) == b"\r\n"  # RFC 5626 keep-alive over TLS too


@pytest.mark.parametrize("path", TORTURE_FILES, ids=lambda p: p.stem)
def test_rfc4475_message_over_udp(sip_server, path):
    """Every torture message gets the answer its section prescribes, or is dropped, and the
    element keeps serving."""
    server = sip_server()
    client = server.client()
    data = path.read_bytes()
    try:
        message = parse_datagram(data)
    except ParseError as err:
        expected = None if err.drop else err.status
        branch = err.headers and err.headers.get("Via")
    else:
        expected = None if isinstance(message, Response) else ANSWERS[path.stem]
        branch = message.headers.get("Via")
    client.send(data)
    alive = client.request("OPTIONS")
    client.send(alive)
    first = client.recv()
    if expected is None:  # dropped
        assert (first.call_id, first.status) == (alive.call_id, 200), first
        return
    assert first is not None and first.headers.get("Via").startswith(branch), first  # its answer
    assert first.status == expected, (first.status, first.reason)
    if expected == 420:
        assert first.headers.get_all("Unsupported") == ["noProxiesSupportThis",
                                                       "norDoAnyProxiesSupportThis"]
    if expected in (400, 513):
        assert first.reason not in ("", "Bad Request")  # names the problem
    assert client.final(alive).status == 200


def test_message_over_max_size_is_513(sip_server):
    server = sip_server(max_message_size=2000)
    client = server.client()
    request = client.request("OPTIONS", headers=[("X-Padding", "x" * 2500)])
    assert client.ask(request).status == 513
    assert probe(client).status == 200


def test_long_header_line_over_udp_is_513(sip_server):
    client = sip_server().client()
    request = client.request("OPTIONS", headers=[("X-Long", "x" * 60000)])
    response = client.ask(request)
    assert (response.status, response.reason) == (513, "Header line too long")


def test_64k_header_line_over_tcp_closes_only_that_connection(sip_server):
    server = sip_server()
    bad, good = server.client("tcp"), server.client("tcp")
    request = bad.request("OPTIONS", headers=[("X-Long", "x" * 65536)])
    bad.send(request)
    assert bad.recv() is None  # no framing left to answer with: closed
    assert probe(good).status == 200


def test_truncated_tcp_message_is_closed_after_the_timeout(sip_server):
    server = sip_server(message_timeout=0.3)
    truncated, other = server.client("tcp"), server.client("tcp")
    request = truncated.request("MESSAGE", body=b"hello")
    truncated.send(bytes(request).replace(b"Content-Length: 5", b"Content-Length: 500"))
    started = gevent.get_hub().loop.now()
    for _ in range(3):
        assert probe(other).status == 200  # served meanwhile
    assert truncated.recv(timeout=5) is None
    assert gevent.get_hub().loop.now() - started >= 0.25
    assert probe(other).status == 200


def test_garbage_datagrams_are_dropped(sip_server):
    client = sip_server().client()
    for garbage in (os.urandom(300), b"\x00" * 10, b"hello\r\n\r\n", b"SIP/2.0 200\r\n\r\n",
                    b"INVITE\r\n\r\n", b"\r\n\r\n", b"\xff" * 70):
        client.send(garbage)
    assert probe(client).status == 200
    assert client.recv(timeout=0.2) is None  # nothing else came back


def test_crlf_keepalive_gets_a_pong_over_tcp(sip_server):
    client = sip_server().client("tcp")
    client.send(b"\r\n\r\n")
    assert client.sock.recv(10) == b"\r\n"
    assert probe(client).status == 200


@pytest.mark.parametrize("method, status", [("FOOBAR", 501), ("NOTIFY", 405), ("REFER", 405),
                                            ("SUBSCRIBE", 489), ("PUBLISH", 489)])
def test_unknown_and_unsupported_methods(sip_server, method, status):
    client = sip_server().client()
    response = client.ask(client.request(method, uri=f"sip:alice@{DOMAIN}"))
    assert response.status == status
    if status == 405:
        assert "SUBSCRIBE" in response.headers.get_all("Allow")
    if status == 489:  # no Event: presence (RFC 6665 §8.2.2)
        assert response.headers.get("Allow-Events") == "presence"


def test_max_forwards_zero_is_483(sip_server):
    client = sip_server().client()
    request = client.request("MESSAGE", uri=f"sip:bob@{DOMAIN}", body=b"hi")
    request.headers.set("Max-Forwards", "0")
    assert client.ask(request).status == 483


@pytest.mark.parametrize("method", ["OPTIONS", "INVITE", "SUBSCRIBE", "REGISTER"])
def test_other_domains_are_forbidden(sip_server, method):
    """No open relay: only a MESSAGE may name another domain, and messaging challenges it (it
    takes such a MESSAGE from an authenticated local user only, for the core's router)."""
    client = sip_server().client()
    response = client.ask(client.request(method, uri="sip:bob@elsewhere.example.net", body=b"x"))
    assert (response.status, response.reason) == (403, "Relaying Forbidden")
    response = client.ask(client.request("MESSAGE", uri="sip:bob@elsewhere.example.net", body=b"x"))
    assert response.status == 407


def test_rport_and_received(sip_server):
    client = sip_server().client()
    request = client.request("OPTIONS")
    via = request.headers.get("Via").replace(f"{client.host}:{client.port}", "192.0.2.1:5060")
    request.headers.set("Via", via + ";rport")
    response = client.ask(request)  # answered to the source address all the same
    top = response.via[0]
    assert (top.received, top.rport) == ("127.0.0.1", client.port)


def test_retransmitted_request_gets_the_same_response(sip_server):
    client = sip_server().client()
    request = client.request("REGISTER", headers=[("Contact", f"<sip:alice@{client.host}>")])
    first = client.ask(request)
    client.send(request)  # same branch: absorbed, the last response is sent again
    again = client.recv_for(request)
    assert first.status == 401 and bytes(again) == bytes(first)


def test_answered_transaction_ends_after_timer_j(sip_server):
    """The completed non-INVITE transaction is kept as its answer only for 64*T1 (§17.2.2):
    then the same request is a new one (a new challenge, with a new nonce)."""
    t1 = 0.02
    client = sip_server(t1=t1).client()
    request = client.request("REGISTER", headers=[("Contact", f"<sip:alice@{client.host}>")])
    first = client.ask(request)
    started = time.monotonic()
    with gevent.Timeout(64 * t1 + 5):
        while True:
            client.send(request)
            again = client.recv_for(request)
            if bytes(again) != bytes(first):
                break
            gevent.sleep(t1)  # pacing the retransmissions, not synchronisation
    assert again.status == 401 and time.monotonic() - started >= 64 * t1 - t1


def test_sip_uri_with_our_address_is_local(sip_server):
    server = sip_server()
    client = server.client()
    request = client.request("OPTIONS", uri=f"sip:127.0.0.1:{server.port}")
    assert client.ask(request).status == 200


def test_answer_waiting_on_the_socket_is_read_before_a_retransmission(sip_server):
    """Timer E of a MESSAGE we sent over UDP finds the phone's 200 still queued on the socket
    (the reader is behind a backlog; here it reads nothing at all): the 200 is handled, ending the
    transaction, and the MESSAGE is not sent again."""
    server = sip_server()
    element = server.element
    element.transport.udp._reader.kill()  # only the timer's read_waiting reads the socket now
    phone = server.client()
    answered, outcomes = Event(), []

    def on_response(response):
        outcomes.append(response.status)
        answered.set()

    headers = Headers([("Max-Forwards", "70"), ("From", f"<sip:alice@{DOMAIN}>;tag=a1"),
                       ("To", f"<sip:bob@{DOMAIN}>"), ("Call-ID", "queued-1@test"),
                       ("CSeq", "1 MESSAGE")])
    flow = element.transport.flow("UDP", "127.0.0.1", phone.port)
    message = Request("MESSAGE", f"sip:bob@127.0.0.1:{phone.port}", headers, b"hi")
    ct = element.transactions.send_request(message, flow, on_response)
    phone.send(make_response(phone.recv(), 200, to_tag="phone"))  # queued: nobody reads it
    assert ct.txn.state == "trying" and ct.txn.timers["E"] < ct.txn.timers["F"]
    assert answered.wait(5)  # Timer E fires after T1 (0.05 s) and reads the 200 first
    assert outcomes == [200] and ct.txn.state == "completed"
    assert phone.recv(timeout=0) is None  # no retransmission came
