"""RFC 7395 framing and the WebSocket handshake as sans-IO units (no server)."""
import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from convergence.plugins.xmpp.stream import StreamError, stream_error
from convergence.plugins.xmpp.websocket import (CLOSE, Close, HandshakeError, Open, WebSocketLink,
                                                WebSocketStream, frame, frames, handshake,
                                                open_element)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def upgrade(**fields):
    headers = {"Upgrade": "websocket", "Connection": "keep-alive, Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Protocol": "chat, xmpp"}
    headers.update(fields)
    return {k: v for k, v in headers.items() if v is not None}


def test_handshake():
    fields = dict(handshake(upgrade()))
    assert fields["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert fields["Sec-WebSocket-Protocol"] == "xmpp" and "Sec-WebSocket-Extensions" not in fields
    for fields, status in [({"Upgrade": None}, 426), ({"Connection": "close"}, 426),
                           ({"Sec-WebSocket-Version": "8"}, 426), ({"Sec-WebSocket-Key": "abc"}, 400),
                           ({"Sec-WebSocket-Key": None}, 400), ({"Sec-WebSocket-Protocol": None}, 400),
                           ({"Sec-WebSocket-Protocol": "chat, xmpp-old"}, 400)]:
        with pytest.raises(HandshakeError) as caught:
            handshake(upgrade(**fields))
        assert caught.value.status == status, fields


def test_one_element_per_message():
    opened = frame(b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0' "
                   b"xml:lang='de'/>")
    assert isinstance(opened, Open)
    assert opened.attrs == {"to": "example.org", "version": "1.0", "xml:lang": "de"}
    assert isinstance(frame(b" <close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>\n"), Close)
    stanza = b"<message xmlns='jabber:client' to='a@example.org'><body>x &amp; y</body></message>"
    assert frame(b"<?xml version='1.0'?>\n " + stanza + b"\n") == stanza + b"\n"
    for data, condition in [
            (b"", "bad-format"), (b"   ", "bad-format"),
            (b"<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>", "bad-format"),
            (b"<message xmlns='jabber:client'><body>half", "bad-format"),
            (b"<presence xmlns='jabber:client'/>trailing", "bad-format"),
            (b"<a><b></a>", "not-well-formed"), (b"<x:a/>", "bad-namespace-prefix"),
            (b"<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>", "restricted-xml"),
            (b"<a><!-- c --></a>", "restricted-xml"), (b"<a><?pi x?></a>", "restricted-xml"),
            (b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>", "bad-format")]:
        with pytest.raises(StreamError) as caught:
            frame(data)
        assert caught.value.condition == condition, data


def test_what_the_server_writes():
    opened = open_element("example.org", None, "abc", "en")
    assert opened == (b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' id='abc' "
                      b"version='1.0' xml:lang='en'/>")
    assert frames(b"<message to='a@b'><body>1 &gt; 0</body></message>") == [
        "<message xmlns='jabber:client' to='a@b'><body>1 &gt; 0</body></message>"]
    assert frames(b"<presence/>") == ["<presence xmlns='jabber:client'/>"]
    assert frames(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>") == [
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"]
    assert frames(b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>") == [
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind "
        "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"]
    assert frames(b"<stream:features/>") == [
        "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>"]
    assert frames(stream_error("bad-format")) == [
        "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><bad-format "
        "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>", CLOSE]
    assert frames(b"</stream:stream>") == [CLOSE]


class Recorder:
    """What WebSocketStream drives: a TCP link recording bytes, a session recording calls."""

    def __init__(self):
        self.sent, self.closed, self.close_reason, self.accepted, self.written = [], False, None, 0, 0
        self.calls, self.stream_open = [], True

    def send(self, data: bytes) -> bool:  # the TCP connection
        self.sent.append(data)
        return True

    def close_after_flush(self, reason, timeout=2.0):
        self.calls.append(("close_after_flush", reason))

    def receive(self, data: bytes):  # the session
        self.calls.append(("receive", data))

    def close(self, condition=None, text=None):
        self.calls.append(("close", condition))
        self.closed = True

    def connection_lost(self):
        self.calls.append(("connection_lost",))


def test_the_link_can_close_its_connection_at_once():
    """``close``: no close frame, the TCP connection ends now (a session resumed on another
    cluster node, XEP-0198: its connection is presumed dead)."""
    conn = Recorder()
    link = WebSocketLink(conn)
    link.close("resumed on another node")
    assert link.closed and conn.calls == [("close", "resumed on another node")] and not conn.sent


def client_frames(*events) -> bytes:
    """What a client's wsproto (masking its frames, RFC 6455 §5.3) sends."""
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(event) for event in events)


def server_events(data: bytes) -> list:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(data)
    return list(client.events())


def test_the_stream_feeds_the_session_and_answers_control_frames():
    fake = Recorder()
    link = WebSocketLink(fake)
    stream = WebSocketStream(fake, link, max_size=100)
    stanza = "<presence xmlns='jabber:client'/>"
    data = client_frames(TextMessage(data=stanza[:10], message_finished=False),
                         Ping(payload=b"p"), TextMessage(data=stanza[10:]))
    for i in range(len(data)):  # a byte at a time: frames cut anywhere
        stream.receive(data[i:i + 1])
    assert fake.calls == [("receive", stanza.encode())]
    assert server_events(b"".join(fake.sent)) == [Pong(payload=b"p")]
    # What the session writes: one text message per element, namespace-qualified.
    fake.sent.clear()
    link.send(b"<message to='a@b'/>")
    assert server_events(b"".join(fake.sent)) == [TextMessage(data="<message xmlns='jabber:client' to='a@b'/>")]
    # The client's close: answered, the connection closes after it, the session is over.
    fake.sent.clear()
    stream.receive(client_frames(CloseConnection(code=1001)))
    assert fake.calls[1:] == [("close_after_flush", "WebSocket closed by peer (1001)"), ("connection_lost",)]
    assert server_events(b"".join(fake.sent)) == [CloseConnection(code=1001, reason="")]
    assert link.send(b"<presence/>") is False  # closing: nothing more goes out
    stream.receive(client_frames(TextMessage(data=stanza)))  # and nothing more comes in
    assert len(fake.calls) == 3


def test_the_stream_refuses_what_is_not_one_small_text_message():
    for events, condition in [([BytesMessage(data=b"<presence/>")], "bad-format"),
                              ([TextMessage(data="x" * 60, message_finished=False),
                                TextMessage(data="x" * 60, message_finished=False)], "policy-violation")]:
        fake = Recorder()
        stream = WebSocketStream(fake, WebSocketLink(fake), max_size=100)
        stream.receive(client_frames(*events))
        assert fake.calls == [("close", condition)]
    fake = Recorder()  # an unmasked client frame is a WebSocket protocol error: close 1002
    stream = WebSocketStream(fake, WebSocketLink(fake), max_size=100)
    stream.receive(b"\x81\x03abc")
    assert fake.calls[-1] == ("connection_lost",)
    assert server_events(b"".join(fake.sent))[0].code == 1002
