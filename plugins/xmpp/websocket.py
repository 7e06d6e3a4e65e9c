"""XMPP over WebSocket (RFC 7395) as a sans-IO adapter around the c2s session: frames in, frames out.

Rules of this file: no gevent, socket or ssl imports (``websocket_http.py`` owns the socket). The
WebSocket protocol itself (RFC 6455 frames, masking, fragmentation, ping/pong, close handshake,
UTF-8 of text frames) is wsproto's: its sans-IO ``wsproto.connection.Connection`` runs after the
HTTP upgrade that :func:`handshake` answers. The XMPP session is the TCP one (``c2s.Session``): the
same SASL, binding, routing, limits and slow-reader handling; only the framing differs.

- :func:`handshake` checks an upgrade request (RFC 6455 §4.2.1) and that the client offers the
  ``xmpp`` subprotocol (RFC 7395 §3.1: the server must not accept the connection otherwise).
- :class:`WebSocketStream` is what the transport feeds (``receive``, ``idle``, ``idle_timeout``,
  ``connection_lost``, like a TCP session). Each text message must be exactly one XML element
  (RFC 7395 §3.3.3): ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>`` (§3.4) becomes a
  stream header for the session's parser, ``<close/>`` (§3.6) its ``</stream:stream>``, anything
  else is fed to the session as a first-level element of that stream. A message that is empty,
  holds two elements or only part of one is a ``bad-format`` stream error, malformed XML
  ``not-well-formed``, a DTD, comment or processing instruction ``restricted-xml``, a binary
  message ``bad-format`` (§3.3.1: XMPP is sent in text frames), a message longer than ``[xmpp]
  max_stanza_size`` bytes ``policy-violation`` (counted as its fragments arrive).
- :class:`WebSocketLink` is the session's ``link``: each ``send`` becomes text messages, each a
  complete element qualified by its namespace (§3.3.3: no stream element supplies the default
  ``jabber:client``), ``</stream:stream>`` becomes ``<close/>`` (§3.6, after a stream error §3.7)
  and closing sends a WebSocket close frame (status 1000) before the TCP connection closes.
  ``accepted`` and ``written`` are the TCP connection's counts, frame headers included, so the
  session's slow-reader bookkeeping (issue 11) holds as on TCP.
- :class:`WebSocketSession` is ``c2s.Session`` with an ``<open/>`` instead of a stream header
  (§3.4) and no STARTTLS (§3.1: TLS is the ``wss:`` connection's; ``encrypted`` says whether the
  transport counts it as such, see docs/xmpp.md "WebSocket").
"""
from __future__ import annotations

import base64
import binascii
import secrets
import xml.etree.ElementTree as ET
from xml.parsers import expat

from wsproto.connection import Connection as WebSocketProtocol, ConnectionType, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

from .c2s import STARTTLS, TLS_FAILURE, Session
from .stream import CLIENT_NS, STREAM_CLOSE, STREAM_NS, StreamError, restrict, stream_header

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"
PATH = "/xmpp-websocket"
ALT_CONNECTION = "urn:xmpp:alt-connections:websocket"  # XEP-0156 §3

_OPEN, _CLOSE = FRAMING_NS + "}open", FRAMING_NS + "}close"  # expat's spelling
CLOSE = f"<close xmlns='{FRAMING_NS}'/>"
_XML_DECLARATION = b"<?xml version='1.0'?>"
_STREAM_PREFIX = b"<stream:"
_STREAM_DECLARATION = f" xmlns:stream='{STREAM_NS}'".encode()
_CLIENT_DECLARATION = f" xmlns='{CLIENT_NS}'".encode()
_NORMAL_CLOSURE = 1000  # RFC 6455 §7.4.1


# ---- the opening handshake (RFC 6455 §4.2, RFC 7395 §3.1) ---------------------------------------

class HandshakeError(Exception):
    """An upgrade request we refuse: ``status`` and ``headers`` for the HTTP answer."""

    def __init__(self, status: int, text: str, headers: tuple = ()):
        super().__init__(text)
        self.status, self.text, self.headers = status, text, list(headers)


def _tokens(value: str | None) -> list[str]:
    return [token.strip().lower() for token in (value or "").split(",") if token.strip()]


def handshake(headers) -> list[tuple[str, str]]:
    """The ``101`` answer's header fields for an upgrade request's ``headers`` (a mapping with
    case-insensitive ``get``), or :class:`HandshakeError`: ``426`` without an upgrade to
    WebSocket (RFC 9110 §15.5.22) or for a version other than 13 (RFC 6455 §4.4), ``400`` for a
    bad key or without the ``xmpp`` subprotocol (RFC 7395 §3.1). No extension is accepted."""
    upgrade = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    if "websocket" not in _tokens(headers.get("Upgrade")) or \
            "upgrade" not in _tokens(headers.get("Connection")):
        raise HandshakeError(426, "this is the XMPP WebSocket endpoint (RFC 7395): upgrade to "
                                  "WebSocket with subprotocol 'xmpp'", upgrade + [("Connection", "Upgrade")])
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        raise HandshakeError(426, "WebSocket version 13 only (RFC 6455 §4.4)", upgrade[1:])
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)")
    if SUBPROTOCOL not in _tokens(headers.get("Sec-WebSocket-Protocol")):
        raise HandshakeError(400, "the WebSocket subprotocol 'xmpp' is required (RFC 7395 §3.1)")
    return [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode()),
            ("Sec-WebSocket-Protocol", SUBPROTOCOL)]


# ---- one message, one element (RFC 7395 §3.3.3) ---------------------------------------------------

class Open:
    """An ``<open/>`` message: its attributes by written name (``to``, ``version``, ``xml:lang``)."""
    __slots__ = ("attrs",)

    def __init__(self, attrs: dict[str, str]):
        self.attrs = attrs


class Close:
    """A ``<close/>`` message."""
    __slots__ = ()


class _Frame:
    """Parses one message with expat (linear; DTDs refused as by ``stream.StreamParser``) and
    finds its single element: where it starts, and its name and attributes if it is the root."""
    __slots__ = ("parser", "depth", "roots", "start", "name", "attrs")

    def __init__(self):
        parser = expat.ParserCreate("utf-8", "}")
        restrict(parser)
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        self.parser = parser
        self.depth = self.roots = 0
        self.start = 0
        self.name, self.attrs = "", {}

    def _start(self, name, attrs):
        if self.depth == 0:
            self.start, self.name, self.attrs = self.parser.CurrentByteIndex, name, attrs
        self.depth += 1

    def _end(self, name):
        self.depth -= 1
        if self.depth == 0:
            self.roots += 1


def frame(data: bytes) -> Open | Close | bytes:
    """What one text message holds: :class:`Open`, :class:`Close`, or the bytes of the one element
    it holds (from its first ``<``: an XML declaration or whitespace before it is dropped), to feed
    to the session's stream parser. Raises :class:`StreamError` for anything else."""
    parsed = _Frame()
    try:
        parsed.parser.Parse(data, True)
    except expat.ExpatError as exc:
        if parsed.roots:
            raise StreamError("bad-format", "one XML element per WebSocket message "
                                            "(RFC 7395 §3.3.3); this one has more") from None
        if parsed.name and exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]:
            raise StreamError("bad-format", "an element must not be split across WebSocket "
                                            "messages (RFC 7395 §3.3.3)") from None
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]:
            raise StreamError("bad-format", "an empty WebSocket message (RFC 7395 §3.3.3)") from None
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_UNBOUND_PREFIX]:
            raise StreamError("bad-namespace-prefix", str(exc)) from None
        raise StreamError("not-well-formed", str(exc)) from None
    finally:
        parsed.parser = None  # its handlers are parsed's methods: no cycle left for the collector
    if parsed.name == _OPEN:
        return Open({("xml:" + key.rpartition("}")[2]) if "}" in key else key: value
                     for key, value in parsed.attrs.items()})
    if parsed.name == _CLOSE:
        return Close()
    if parsed.name.startswith(STREAM_NS + "}"):
        raise StreamError("bad-format", "stream headers are <open/> and <close/> in the "
                                        "urn:ietf:params:xml:ns:xmpp-framing namespace (RFC 7395 §3.4)")
    return data[parsed.start:]


def frames(data: bytes) -> list[str]:
    """The text messages for what the session wrote in one ``send``: one complete element (our
    ``<open/>`` included), or one followed by ``</stream:stream>`` (a stream error, a STARTTLS
    failure), or ``</stream:stream>`` alone. Our own serializer wrote
    each (``stream.serialize``, which escapes ``>`` in attribute values: the first ``>`` ends the
    start tag), so no parsing is needed: the root gets the namespace declaration its stream
    would have given it."""
    out = []
    closing = data.endswith(STREAM_CLOSE)
    if closing:
        data = data[:-len(STREAM_CLOSE)]
    if data:
        head = data[:data.find(b">")]
        if data.startswith(_STREAM_PREFIX):
            declaration = b"" if b" xmlns:stream=" in head else _STREAM_DECLARATION
        else:
            declaration = b"" if b" xmlns='" in head or b' xmlns="' in head else _CLIENT_DECLARATION
        if declaration:
            name_end = next((i for i, ch in enumerate(head) if ch in b" \t\r\n/"), len(head))
            data = data[:name_end] + declaration + data[name_end:]
        out.append(data.decode())
    if closing:
        out.append(CLOSE)
    return out


def open_element(from_: str, to: str | None, id: str, lang: str) -> bytes:
    """Our ``<open/>`` (RFC 7395 §3.4): the attributes of a stream header, the framing namespace."""
    header = stream_header(from_, to, id, lang=lang)[len(_XML_DECLARATION):]
    attrs = header[len(b"<stream:stream"):-1].replace(_CLIENT_DECLARATION, b"").replace(
        _STREAM_DECLARATION, b"")
    return b"<open xmlns='%s'%s/>" % (FRAMING_NS.encode(), attrs)


# ---- the session's link ----------------------------------------------------------------------------

class WebSocketLink:
    """A c2s session's ``link`` over a WebSocket: ``conn`` is the TCP link (``convergence
    .connection.Connection``: bounded queue, counts), ``ws`` the wsproto connection."""

    __slots__ = ("conn", "ws")

    def __init__(self, conn, ws: WebSocketProtocol | None = None):
        self.conn = conn
        self.ws = ws or WebSocketProtocol(ConnectionType.SERVER)

    @property
    def closed(self) -> bool:
        return self.conn.closed

    @property
    def close_reason(self):
        return self.conn.close_reason

    @property
    def accepted(self) -> int:
        return self.conn.accepted

    @property
    def written(self) -> int:
        return self.conn.written

    def send(self, data: bytes) -> bool:
        if self.ws.state is not ConnectionState.OPEN:
            return False
        ok = True
        for text in frames(data):
            ok = self.conn.send(self.ws.send(TextMessage(data=text)))
        return ok

    def send_raw(self, event) -> bool:
        """A control frame (pong, close) in wsproto's terms; False if it cannot be sent now."""
        try:
            return self.conn.send(self.ws.send(event))
        except LocalProtocolError:
            return False

    def flush(self, timeout: float | None = None) -> bool:
        return self.conn.flush(timeout)

    def start_tls(self, context, *args, **kwargs) -> None:
        raise OSError("no STARTTLS over WebSocket (RFC 7395 §3.1: TLS is wss://)")

    def close(self, reason: str) -> None:
        """The TCP close at once, nothing more written (a connection presumed dead)."""
        self.conn.close(reason)

    def close_after_flush(self, reason: str, timeout: float = 2.0) -> None:
        """A close frame after what is queued (RFC 6455 §5.5.1, RFC 7395 §3.6), then the TCP close."""
        self.send_raw(CloseConnection(code=_NORMAL_CLOSURE))
        self.conn.close_after_flush(reason, timeout)


# ---- the session and what feeds it -------------------------------------------------------------------

class WebSocketSession(Session):
    """A c2s session over WebSocket: ``<open/>`` for a header (RFC 7395 §3.4), no STARTTLS."""

    __slots__ = ()

    def _send_header(self, to: str | None = None) -> None:
        self.header_sent = True
        self.link.send(open_element(self.service.domain, to, secrets.token_hex(8), self.lang))

    def _features(self) -> ET.Element:
        features = super()._features()
        for starttls in features.findall(STARTTLS):
            features.remove(starttls)
        return features

    def _starttls(self) -> None:
        """RFC 6120 §5.4.2.2: <failure/> and the end of the stream; over WebSocket TLS is wss://."""
        self.link.send(TLS_FAILURE)
        self._end("STARTTLS over WebSocket refused")


class WebSocketStream:
    """Bytes from the TCP connection → WebSocket messages → the session (see the module docstring)."""

    __slots__ = ("session", "link", "max_size", "pending", "binary")

    def __init__(self, session: Session, link: WebSocketLink, max_size: int):
        self.session = session
        self.link = link
        self.max_size = max_size  # [xmpp] max_stanza_size: bytes of one message
        self.pending: list[bytes] = []  # the fragments of a message not yet complete
        self.binary = 0  # bytes of the current message so far

    def __repr__(self):
        return f"<WebSocket {self.session!r}>"

    def receive(self, data: bytes) -> None:
        ws = self.link.ws
        if ws.state is ConnectionState.CLOSED:
            return  # both close frames went: whatever follows is not for us (RFC 6455 §5.5.1)
        ws.receive_data(data)
        for event in ws.events():
            if self.session.closed:
                return
            if isinstance(event, TextMessage):
                self._text(event)
            elif isinstance(event, BytesMessage):
                return self.session.close("bad-format", "XMPP is sent in text messages (RFC 7395 §3.3.1)")
            elif isinstance(event, Ping):
                self.link.send_raw(event.response())
            elif isinstance(event, CloseConnection):
                # The client closed the WebSocket (without <close/> first, or after it: §3.6).
                self.link.send_raw(event.response())
                self.link.conn.close_after_flush(f"WebSocket closed by peer ({event.code})")
                return self.session.connection_lost()

    def _text(self, event: TextMessage) -> None:
        data = event.data.encode()
        self.binary += len(data)
        if self.binary > self.max_size:
            return self.session.close("policy-violation",
                                      f"WebSocket message larger than {self.max_size} bytes")
        if not event.message_finished:
            self.pending.append(data)
            return
        if self.pending:
            self.pending.append(data)
            data = b"".join(self.pending)
            self.pending.clear()
        self.binary = 0
        self.message(data)

    def message(self, data: bytes) -> None:
        """One complete text message."""
        session = self.session
        try:
            content = frame(data)
        except StreamError as exc:
            return session.close(exc.condition, exc.text)
        if isinstance(content, Open):
            if session.stream_open:
                return session.close("bad-format", "<open/> in an open stream (RFC 7395 §3.4)")
            attrs = content.attrs
            session.receive(stream_header(attrs.get("from"), attrs.get("to"), attrs.get("id"),
                                          attrs.get("version"), attrs.get("xml:lang")))
        elif isinstance(content, Close):
            session.receive(STREAM_CLOSE)
        elif not session.stream_open:
            session.close("bad-format", "the stream starts with <open/> (RFC 7395 §3.4)")
        else:
            session.receive(content)

    def idle_timeout(self) -> float:
        return self.session.idle_timeout()

    def idle(self) -> None:
        self.session.idle()

    def connection_lost(self) -> None:
        self.session.connection_lost()
