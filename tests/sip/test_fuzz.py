"""Malformed SIP input, mutated from the RFC 4475 messages: answered well or dropped, never a crash.

A seeded mutator (same cases on every run) flips bytes, inserts the characters SIP framing and
grammar hinge on (CR, LF, NUL, SP, HTAB, commas, quotes, brackets, backslashes), truncates, and
duplicates or drops header lines. Sans-IO first, thousands of cases: the parser returns a message
or raises its :class:`ParseError`, nothing else, and whatever it would answer can be written. Then
a few hundred over real UDP and TCP against one ``convergence serve``: every answer is
well-formed SIP, the server still answers OPTIONS, and its log holds no traceback (issue 11 part 3).
"""
from __future__ import annotations

import logging
import random
import re
import socket
from pathlib import Path

import gevent
import gevent.socket
import pytest

from convergence.plugins.sip.dispatcher import Complaints
from convergence.plugins.sip.message import (Headers, KeepAlive, ParseError, Request,
                                             StreamParser, make_response, parse_datagram)

# CI runs in a fresh clone with a copy of shared/ beside it, so look beside the repository.
TORTURE = Path(__file__).resolve().parents[2].parent / "shared" / "rfc4475"
INSERTED = [b"\r", b"\n", b"\0", b"\r\n", b"\r\n ", b" ", b"\t", b",", b'"', b"\\", b"<", b">",
            b";", b":", b"=", b"@", b"\xff"]
STATUS_LINE = re.compile(rb"SIP/2\.0 [1-6][0-9][0-9] [^\r\n\0]*")
FIELD_LINE = re.compile(rb"[A-Za-z0-9.!%*_+`'~-]+: [^\r\n]*")


def corpus() -> list[bytes]:
    if not TORTURE.is_dir():
        pytest.fail(f"RFC 4475 messages not found: expected {TORTURE} (shared/ beside the repo)")
    return [path.read_bytes() for path in sorted(TORTURE.glob("*.dat"))]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """``data`` after one to four random edits."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        edit = rng.randrange(6)
        if edit == 0 and at < len(data):  # flip a byte
            data[at] = rng.randrange(256)
        elif edit in (1, 2):  # insert a character the grammar hinges on (twice as likely)
            data[at:at] = rng.choice(INSERTED) * rng.choice((1, 1, 1, 2, 50))
        elif edit == 3:  # truncate
            del data[max(at, 1):]
        else:  # duplicate or drop a header line
            lines = bytes(data).split(b"\r\n")
            line = rng.randrange(len(lines))
            if edit == 4:
                lines.insert(line, lines[line])
            else:
                del lines[line]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def cases(count: int, seed: int) -> list[bytes]:
    rng, messages = random.Random(seed), corpus()
    return [mutate(rng.choice(messages), rng) for _ in range(count)]


def assert_well_formed(answer: bytes) -> None:
    """A response as RFC 3261 §7 writes it: status line, ``name: value`` lines with no CR, LF or
    NUL beyond the CRLF that end them, an empty line, and as many body bytes as announced."""
    head, separator, body = answer.partition(b"\r\n\r\n")
    assert separator, answer
    status, *fields = head.split(b"\r\n")
    assert STATUS_LINE.fullmatch(status), answer
    for line in fields:
        assert FIELD_LINE.fullmatch(line), answer
        assert line.count(b"\0") == line.count(b"\\\0"), answer  # NUL only in a quoted-pair
    lengths = [line.partition(b": ")[2] for line in fields
               if line.partition(b":")[0].lower() in (b"content-length", b"l")]
    assert lengths == [b"%d" % len(body)], answer


def check_answerable(outcome) -> None:
    """What a server would send back for a parse outcome, if anything, is well-formed."""
    if isinstance(outcome, ParseError):
        if not outcome.drop:
            assert_well_formed(bytes(outcome.response()))
    elif isinstance(outcome, Request) and outcome.method != "ACK":
        assert_well_formed(bytes(make_response(outcome, 200, to_tag="fuzz")))


# ---- sans-IO -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_mutated_datagrams_parse_or_fail_cleanly(seed):
    for data in cases(1250, seed):
        try:
            outcome = parse_datagram(data)
        except ParseError as err:
            outcome = err
        check_answerable(outcome)


@pytest.mark.parametrize("seed", range(2))
def test_mutated_streams_parse_or_fail_cleanly(seed):
    """On a stream each message is framed by Content-Length; a framing error ends the stream."""
    for data in cases(500, 100 + seed):
        stream = StreamParser()
        stream.feed(data + data)  # a second copy: framing must find where the first ended
        while True:
            try:
                outcome = stream.next_message()
            except ParseError as err:
                outcome = err
            if outcome is None or isinstance(outcome, KeepAlive):
                break
            check_answerable(outcome)
            if isinstance(outcome, ParseError) and outcome.fatal:
                break


def test_bare_cr_or_nul_in_a_header_field_is_answered_400():
    """RFC 3261 §25.1 allows CR only in the CRLF that ends a line, NUL only in a quoted-pair."""
    [intmeth] = [data for data in corpus() if b"NUL:\\\x00" in data]
    assert isinstance(parse_datagram(intmeth), Request)  # RFC 4475 §3.1.1.2: "\" NUL is valid
    for bad, reason in [(b"Subject: a\rb", "Bare CR in a header field"),
                        (b"Subject: a\r", "Bare CR in a header field"),
                        (b"Subject: a\0b", "NUL in a header field"),
                        (b"Subject: \\\\\0", None)]:  # an escaped backslash, then a bare NUL
        data = intmeth.replace(b"\r\nMax-Forwards:", b"\r\n" + bad + b"\r\nMax-Forwards:")
        with pytest.raises(ParseError) as caught:
            parse_datagram(data)
        assert caught.value.status == 400
        if reason:
            assert caught.value.reason == f"{reason} (RFC 3261 section 25.1)"
        check_answerable(caught.value)
    with pytest.raises(ParseError, match="400 Bare CR in the start line"):
        parse_datagram(intmeth.replace(b" SIP/2.0\r\n", b" SIP/2.0\r\r\n", 1))


# ---- the log, when an answer cannot be made ----------------------------------------------------

class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unanswerable_input_is_one_log_line_per_source_and_interval(caplog):
    clock = Clock()
    complaints = Complaints(clock, interval=60, limit=2)
    with caplog.at_level(logging.WARNING, logger="convergence.plugins.sip.dispatcher"):
        for source in ["192.0.2.1"] * 5 + ["192.0.2.2", "192.0.2.3", "192.0.2.4"]:
            complaints(source, f"cannot answer {source}")
        clock.now = 60
        complaints("192.0.2.1", "cannot answer again")
    assert [record.getMessage() for record in caplog.records] == [
        "SIP: cannot answer 192.0.2.1", "SIP: cannot answer 192.0.2.2",
        "SIP: cannot answer 192.0.2.3",  # the table is full: the others share one line
        "SIP: cannot answer again (4 more from 192.0.2.1 held back)"]
    assert not any(record.exc_info for record in caplog.records)


def test_an_answer_that_cannot_be_written_is_logged_not_raised(sip_server, caplog):
    """Were the parser ever to keep what cannot be written back, the refusal costs one line."""
    dispatcher = sip_server().element.dispatcher
    err = ParseError(400, "Bad thing")
    err.headers = Headers([("Via", "SIP/2.0/UDP a\rb"), ("CSeq", "1 OPTIONS")])
    err.method = "OPTIONS"

    class Flow:
        peer, key, sent = ("192.0.2.9", 5060), "udp:192.0.2.9:5060", []
        send = sent.append

    with caplog.at_level(logging.WARNING, logger="convergence.plugins.sip.dispatcher"):
        for _ in range(3):
            dispatcher.refuse(err, Flow)
    assert Flow.sent == []
    [record] = caplog.records
    assert "cannot answer 400 'Bad thing' to udp:192.0.2.9:5060" in record.getMessage()
    assert not record.exc_info


# ---- over real sockets -------------------------------------------------------------------------

def receive(sock, until: bytes, timeout: float = 5.0) -> list[bytes]:
    """The datagrams received up to and including the first that contains ``until``."""
    received = []
    with gevent.Timeout(timeout, False):
        while not received or until not in received[-1]:
            received.append(sock.recvfrom(70000)[0])
        return received
    pytest.fail(f"no answer holding {until!r} within {timeout} s: {received!r}")


def options(call_id: str) -> bytes:
    return (f"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}"
            f"\r\nMax-Forwards: 70\r\nFrom: <sip:fuzz@example.com>;tag=f\r\n"
            f"To: <sip:example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def stream_answers(data: bytes) -> list[bytes]:
    """The responses in what a stream brought back, whole."""
    answers = []
    while data := data.lstrip(b"\r\n"):  # keep-alive pongs (RFC 5626 §4.4.1) aside
        head, separator, rest = data.partition(b"\r\n\r\n")
        assert separator, data
        length = int(re.search(rb"\r\n(?:Content-Length|l): *(\d+)", head, re.I)[1])
        answers.append(head + separator + rest[:length])
        data = rest[length:]
    return answers


def test_mutated_messages_over_udp_and_tcp_to_a_real_server(sip_process):
    server = sip_process(message_timeout=0.2)
    udp = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    target = ("127.0.0.1", server.port)
    answered = 0
    for number, data in enumerate(cases(300, 1000)):
        udp.sendto(data[:65000], target)
        call_id = f"alive-{number}"
        udp.sendto(options(call_id), target)
        for answer in receive(udp, f"Call-ID: {call_id}".encode()):
            assert_well_formed(answer)
            answered += call_id.encode() not in answer
    assert answered > 100  # the mutations are answered, mostly: not all dropped

    answered = 0
    for number, data in enumerate(cases(150, 2000)):
        call_id = f"alive-tcp-{number}"
        with gevent.socket.create_connection(target) as tcp:
            # An empty line ends a header section left open (else a keep-alive, answered by a
            # CRLF), then an OPTIONS: answered, or taken for the rest of an unfinished body, and
            # then the server closes the connection after message_timeout.
            tcp.sendall(data + b"\r\n\r\n" + options(call_id).replace(b"UDP", b"TCP"))
            received = b""
            with gevent.Timeout(5):
                while call_id.encode() not in received:
                    chunk = tcp.recv(65536)
                    if not chunk:
                        break
                    received += chunk
        for answer in stream_answers(received):
            assert_well_formed(answer)
            answered += call_id.encode() not in answer
    assert answered > 50

    for transport in ("udp", "tcp"):
        client = server.client(transport)
        assert client.ask(client.request("OPTIONS")).status == 200
        client.close()
    udp.close()
    server.core.stop()
    log = "".join(server.core.output)
    assert "Traceback" not in log and "failed to handle" not in log, log
