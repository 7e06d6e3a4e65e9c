"""Bad input over real sockets: each gets the right stream error (or stamp), and a second client
that is logged in at the same time keeps chatting (RFC 6120 §4.9, §8.1.2.1, §11)."""
import socket
import time

import pytest

from convergence.plugins.xmpp.stream import StreamClose, StreamOpen

HEADER = (b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")
LIMITS = {"max_stanza_size": 8192, "max_queued": 65536, "negotiation_timeout": 1.0,
          "ping_interval": 0.5, "ping_timeout": 0.5}


@pytest.fixture
def server(xmpp_server):
    return xmpp_server({"alice": "wonderland", "bob": "builder", "carol": "c"}, **LIMITS)


@pytest.fixture
def witness(server, xmpp_client):
    """Carol, logged in before the bad input; ``check()`` proves she can still chat afterwards."""
    carol = xmpp_client(server, "carol", password="c")

    def check():
        carol.send_message("echo@example.org", "still there?")
        assert carol.next("message")["body"] == "still there?"
    carol.check = check
    return carol


BILLION_LAUGHS = (b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                  b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>"
                  b"<stream:stream to='example.org' version='1.0' xmlns='jabber:client' "
                  b"xmlns:stream='http://etherx.jabber.org/streams'>&lol2;")


@pytest.mark.parametrize("data, condition", [
    (BILLION_LAUGHS, "restricted-xml"),
    (HEADER + b"<?evil instruction?>", "restricted-xml"),
    (HEADER + b"<!-- a comment -->", "restricted-xml"),
    (HEADER + b"<message><body></message>", "not-well-formed"),
    (HEADER + b"<message><body>&undefined;</body></message>", "not-well-formed"),
    (HEADER + b"<message to='bob@example.org'><body>hi</body></message>", "not-authorized"),
    (HEADER.replace(b"example.org", b"elsewhere.example"), "host-unknown"),
], ids=["billion-laughs", "processing-instruction", "comment", "not-well-formed", "undefined-entity",
        "stanza-before-auth", "wrong-to-domain"])
def test_bad_input_before_login(server, raw_client, witness, data, condition):
    raw = raw_client(server)
    raw.send(data)
    assert raw.stream_error() == condition
    witness.check()


@pytest.mark.parametrize("data, condition", [
    (b"<?evil instruction?>", "restricted-xml"),
    (b"<message to='echo@example.org'><body>unclosed</message>", "not-well-formed"),
    (b"<message to='echo@example.org'><body>" + b"x" * 9000 + b"</body></message>", "policy-violation"),
    (b"<message to='echo@example.org'><body>" + b"x" * 9000, "policy-violation"),  # never finished
], ids=["processing-instruction", "not-well-formed", "oversize-stanza", "oversize-unfinished"])
def test_bad_input_after_login(server, raw_client, witness, data, condition):
    raw = raw_client(server)
    raw.login("alice", "wonderland")
    raw.send(data)
    assert raw.stream_error() == condition
    witness.check()


def test_spoofed_from_is_replaced_by_the_sender(server, raw_client, witness):
    raw = raw_client(server)
    raw.login("alice", "wonderland", resource="raw")
    raw.send(b"<message from='bob@example.org/desk' to='carol@example.org' type='chat'>"
             b"<body>I am bob, honest</body></message>")
    message = witness.next("message")
    assert (message["body"], str(message["from"])) == ("I am bob, honest", "alice@example.org/raw")
    witness.check()


def test_idle_unauthenticated_connections_are_closed(server, raw_client, witness):
    silent, opened = raw_client(server), raw_client(server)
    opened.send(HEADER)
    assert opened.stream_error(timeout=5) == "connection-timeout"
    assert silent.stream_error(timeout=5) == "connection-timeout"
    witness.check()


def test_slow_trickle_does_not_extend_the_negotiation_deadline(server, raw_client, witness):
    raw = raw_client(server)
    start = time.monotonic()
    raw.send(HEADER)
    closed = False
    for _ in range(15):  # a space every 0.2 s for up to 3 s: busy, but not negotiating
        raw.send(b" ")
        if any(isinstance(e, StreamClose) for e in raw.read(lambda e: isinstance(e, StreamClose), 0.2)):
            closed = True
            break
    assert closed and time.monotonic() - start < 2.0  # negotiation_timeout is 1 s
    witness.check()


def test_half_open_connection_is_pinged_then_closed(server, raw_client, witness):
    raw = raw_client(server)
    raw.login("alice", "wonderland")
    ping = raw.next("iq")  # silence for ping_interval: the server asks (XEP-0199)
    assert ping.find("{urn:xmpp:ping}ping") is not None and ping.get("type") == "get"
    assert raw.stream_error(timeout=3) == "connection-timeout"  # no answer within ping_timeout
    witness.check()


def test_answering_pings_keeps_the_connection(server, raw_client, witness):
    raw = raw_client(server)
    raw.login("alice", "wonderland")
    for _ in range(3):
        ping = raw.next("iq")
        raw.send(b"<iq type='result' id='%s' to='example.org'/>" % ping.get("id").encode())
    raw.send(b"<message to='carol@example.org'><body>alive</body></message>")
    assert witness.next("message")["body"] == "alive"


def test_client_that_never_reads_is_disconnected_not_buffered(server, raw_client, witness):
    raw = raw_client(server)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.login("alice", "wonderland")
    echo = b"<message to='echo@example.org'><body>" + b"y" * 6000 + b"</body></message>"
    disconnected = False
    raw.sock.settimeout(10)
    for _ in range(5000):  # up to 30 MB of echoes it never reads
        try:
            raw.send(echo)
        except OSError:
            disconnected = True
            break
    assert disconnected
    witness.check()


def test_streams_opened_with_a_stream_error_still_get_our_header_first(server, raw_client):
    raw = raw_client(server)
    raw.send(b"<?xml version='1.0'?><stream:stream to='example.org' xmlns='jabber:client' "
             b"xmlns:stream='http://etherx.jabber.org/streams'>")  # no version
    events = raw.read(lambda e: isinstance(e, StreamClose))
    assert isinstance(events[0], StreamOpen) and events[0].attrs["from"] == "example.org"
