"""RFC 7395 framing and the WebSocket handshake as sans-IO units (no server)."""
import pytest

from convergence.plugins.xmpp.stream import StreamError, stream_error
from convergence.plugins.xmpp.websocket import (CLOSE, Close, HandshakeError, Open, frame, frames,
                                                handshake, open_element)

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
