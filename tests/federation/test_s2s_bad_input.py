"""Bad input on the s2s listener of a real ``convergence serve`` (issue 13): a hand-written peer
on a raw socket. Each mistake ends only its own stream with the RFC 6120 stream error, and the
federation between the two real servers keeps working."""
import socket
import ssl
from pathlib import Path

import pytest

from convergence.plugins.xmpp import dialback
from convergence.plugins.xmpp.stream import Stanza, StreamClose, StreamOpen, StreamParser
from convergence.testing import free_port

from .talk import says

A, B = "a.example", "b.example"
TLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"


@pytest.fixture
def pair(federated):
    pa, pb = free_port(), free_port()
    a = federated(A, {"alice": "alice-secret"}, {B: f"127.0.0.1:{pb}"},
                  xmpp={"s2s_listen": f"127.0.0.1:{pa}", "max_stanza_size": 4096, "max_queued": 65536,
                        "negotiation_timeout": 10.0})
    b = federated(B, {"bob": "bob-secret"}, {A: f"127.0.0.1:{pa}"},
                  xmpp={"s2s_listen": f"127.0.0.1:{pb}"})
    return a, b


class RawPeer:
    """A server that says what the test tells it, to ``server``'s s2s port."""

    def __init__(self, server):
        self.sock = socket.create_connection(("127.0.0.1", server.s2s_port), timeout=10)
        self.parser = StreamParser(10 ** 7)
        self.id = None
        self.seen = []  # every event so far

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, until) -> list:
        """Events until one satisfies ``until`` (or the server closes the connection)."""
        events = []
        while not any(until(e) for e in events) and not any(isinstance(e, StreamClose) for e in events):
            data = self.sock.recv(65536)
            if not data:
                break
            for event in self.parser.feed(data):
                events.append(event.element if isinstance(event, Stanza) else event)
                self.seen.append(events[-1])
                if isinstance(event, StreamOpen):
                    self.id = event.attrs.get("id")
        return events

    def open(self, to=A, from_=B) -> list:
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream="
                  f"'http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
                  f"to='{to}' from='{from_}' version='1.0'>".encode())
        return self.read(lambda e: getattr(e, "tag", "").endswith("features"))

    def starttls(self) -> None:
        self.send(TLS)
        self.read(lambda e: getattr(e, "tag", "").endswith("proceed"))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)
        self.parser.reset()

    def stream_error(self) -> str:
        if not any(isinstance(e, StreamClose) for e in self.seen):
            self.read(lambda e: isinstance(e, StreamClose))
        [error] = [e for e in self.seen if getattr(e, "tag", "") == "{http://etherx.jabber.org/streams}error"]
        assert self.sock.recv(1) == b""  # and it closed the connection
        return error[0].tag.split("}")[1]

    def result(self, key: str) -> list:
        self.send(f"<db:result from='{B}' to='{A}'>{key}</db:result>".encode())
        return self.read(lambda e: getattr(e, "tag", "").endswith("}result"))


def federation_works(a, b, xmpp_client):
    says(xmpp_client(b, "bob"), xmpp_client(a, "alice"), "still here")


def test_bad_peers_lose_only_their_own_stream(pair, xmpp_client):
    a, b = pair
    peer = RawPeer(a)
    peer.open(to="c.example")
    assert peer.stream_error() == "host-unknown"

    peer = RawPeer(a)
    peer.open()
    peer.send(f"<message from='x@{B}' to='alice@{A}'><body>plain</body></message>".encode())
    assert peer.stream_error() == "policy-violation"  # STARTTLS is required first

    peer = RawPeer(a)
    peer.open()
    peer.starttls()
    peer.open()
    peer.send(f"<message from='x@{B}' to='alice@{A}'><body>hi</body></message>".encode())
    assert peer.stream_error() == "not-authorized"  # no dialback yet

    peer = RawPeer(a)
    peer.open()
    peer.starttls()
    peer.open()
    events = peer.result("0" * 64)  # a key b.example's real server did not make
    assert [e.get("type") for e in events if getattr(e, "tag", "").endswith("}result")] == ["invalid"]
    assert peer.stream_error() == "not-authorized"

    peer = RawPeer(a)
    peer.open()
    peer.starttls()
    peer.send(b"<?xml version='1.0'?><!DOCTYPE bomb [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;'>]>")
    assert peer.stream_error() == "restricted-xml"

    federation_works(a, b, xmpp_client)


def test_spoofed_from_after_dialback_is_invalid_from(pair, xmpp_client):
    """A peer that proves b.example (it knows b's dialback secret) may not speak for c.example,
    nor send more than max_stanza_size."""
    a, b = pair
    secret = Path(b.config["server"]["data_dir"]) / "s2s" / "dialback_secret"
    peer = RawPeer(a)
    peer.open()
    peer.starttls()
    peer.open()
    key = dialback.key(secret.read_bytes(), A, B, peer.id)
    events = peer.result(key)
    assert [e.get("type") for e in events if getattr(e, "tag", "").endswith("}result")] == ["valid"]
    peer.send(f"<message from='x@{B}' to='alice@{A}' type='chat'><body>".encode() + b"x" * 5000)
    assert peer.stream_error() == "policy-violation"

    peer = RawPeer(a)
    peer.open()
    peer.starttls()
    peer.open()
    assert [e.get("type") for e in peer.result(dialback.key(secret.read_bytes(), A, B, peer.id))
            if getattr(e, "tag", "").endswith("}result")] == ["valid"]
    peer.send(f"<message from='x@c.example' to='alice@{A}'><body>spoof</body></message>".encode())
    assert peer.stream_error() == "invalid-from"
    federation_works(a, b, xmpp_client)


def test_a_peer_that_never_reads_is_disconnected(pair, xmpp_client):
    """A peer that asks and asks (db:verify) but never reads the answers: once [xmpp] max_queued
    bytes wait for it, its stream is closed; the federation goes on."""
    a, b = pair
    peer = RawPeer(a)
    peer.open()
    peer.starttls()
    peer.open()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    question = f"<db:verify from='{B}' to='{A}' id='{'x' * 40}'>{'0' * 64}</db:verify>".encode()
    mark = len(a.process.output)
    with pytest.raises(OSError):  # the server closes (a reset) once its queue for us is full
        for _ in range(200):
            peer.sock.sendall(question * 500)
    a.process.wait_for("outbound queue full", start=mark)
    federation_works(a, b, xmpp_client)
