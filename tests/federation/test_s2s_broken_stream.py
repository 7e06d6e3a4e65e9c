"""A stanza handed to an outbound s2s stream is never lost silently (issue 13, "acknowledged means
never lost"): when the stream breaks before its socket took a stanza, the stanza goes again on the
domain's next stream. The peer is a hand-written receiving server on a raw socket (it accepts our
dialback key without asking anyone), so the test decides when it stops reading and when it reads
again: deterministic, where killing a real server would lose what its kernel had taken."""
import socket
import ssl
import time

import pytest

from convergence.plugins.xmpp.stream import Stanza, StreamOpen, StreamParser

from .pki import Authority

A, RAW = "a.example", "raw.example"
HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream="
          "'http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
          f"from='{RAW}' to='{A}' id='{{id}}' version='1.0'>")
STARTTLS = ("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
            "</starttls></stream:features>")
DIALBACK = "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
BODY = "{jabber:server}body"


class ReceivingPeer:
    """One stream our server opened to RAW, from the header to the dialback result."""

    def __init__(self, listener: socket.socket, tls: ssl.SSLContext):
        self.sock, _ = listener.accept()
        self.sock.settimeout(30)
        self.parser = StreamParser(10 ** 7)
        self.bodies = []  # of the messages read, in order
        self._until(lambda e: isinstance(e, StreamOpen))
        self.sock.sendall((HEADER.format(id="s1") + STARTTLS).encode())
        self._until(lambda e: getattr(e, "tag", "").endswith("}starttls"))
        self.sock.sendall(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.sock = tls.wrap_socket(self.sock, server_side=True)
        self.parser.reset()
        self._until(lambda e: isinstance(e, StreamOpen))
        self.sock.sendall((HEADER.format(id="s2") + DIALBACK).encode())
        self._until(lambda e: getattr(e, "tag", "").endswith("}result"))
        self.sock.sendall(f"<db:result from='{RAW}' to='{A}' type='valid'/>".encode())

    def _until(self, done) -> bool:
        """Read events until ``done(event)``; False at the end of the connection."""
        while True:
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionError):
                data = b""
            if not data:
                return False
            for event in self.parser.feed(data):
                event = event.element if isinstance(event, Stanza) else event
                body = event.findtext(BODY) if hasattr(event, "findtext") else None
                if body is not None:
                    self.bodies.append(body.partition(" ")[0])
                if done(event):
                    return True

    def read_until(self, body: str) -> None:
        assert self._until(lambda e: hasattr(e, "findtext") and (e.findtext(BODY) or "").startswith(body))

    def read_to_end(self) -> None:
        self._until(lambda e: False)


@pytest.fixture
def raw_peer(tmp_path):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: it fills soon
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(30)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(*Authority(tmp_path / "ca").issue(RAW))
    yield listener, tls
    listener.close()


def test_stanzas_a_broken_stream_did_not_write_go_on_the_next_one(federated, raw_peer, xmpp_client):
    listener, tls = raw_peer
    server = federated(A, {"alice": "alice-secret"}, {RAW: f"127.0.0.1:{listener.getsockname()[1]}"},
                       xmpp={"max_queued": 65536, "negotiation_timeout": 60.0})
    alice = xmpp_client(server, "alice")
    alice.send_message(f"bob@{RAW}", "first")
    first = ReceivingPeer(listener, tls)
    first.read_until("first")

    # The peer stops reading: the kernel's buffers fill, then our queue for it (max_queued), and
    # the stream is closed with stanzas it never wrote.
    padding, sent, mark = "x" * 30000, [], len(server.process.output)
    deadline = time.monotonic() + 60
    while not any("outbound queue full" in line for line in server.process.output[mark:]):
        assert time.monotonic() < deadline, "the stream to the peer never filled up"
        for _ in range(20):
            sent.append(f"m{len(sent)}")
            alice.send_message(f"bob@{RAW}", f"{sent[-1]} {padding}")
        alice.call(lambda: None)  # the client's loop has run the sends
    for _ in range(20):  # and some after the break, queued for the next stream
        sent.append(f"m{len(sent)}")
        alice.send_message(f"bob@{RAW}", f"{sent[-1]} {padding}")
    first.read_to_end()  # what the kernel had taken still arrives on the old connection

    second = ReceivingPeer(listener, tls)
    second.read_until(sent[-1])
    assert first.bodies[0] == "first"
    again = second.bodies
    assert again, "nothing went on the new stream"
    assert not set(first.bodies) & set(again), "a stanza went twice"
    assert first.bodies[1:] + again == sent  # every one, once, in order
    alice.none("message_error", wait=0.2)  # and no sender was told of a failure
