"""The XML stream (RFC 6120 §4, §11) as a sans-IO core: bytes in, events out; elements in, bytes out.

Rules of this file: no I/O and no gevent, socket or ssl imports (the transport owns those); stdlib
only (expat, ElementTree). One ``StreamParser`` reads what one peer sends; ``feed()`` returns the
events its bytes completed, in order, on the very feed that completes them:

- ``StreamOpen(attrs)``: the ``<stream:stream>`` header (§4.2, §4.7);
- ``Stanza(element)``: each complete first-level child (§4.1) as an ElementTree element with
  ``{namespace}local`` names; whitespace keep-alives between them (§4.6.1, §11.7) produce no event;
- ``StreamClose()``: the peer's ``</stream:stream>`` (§4.4).

Bad input raises ``StreamError(condition, text, events)``, and every later ``feed()`` raises it again
(stream errors are unrecoverable, §4.9.1.1); ``events`` are those the failing feed completed
before the error, for the session to handle before it closes. Conditions (§4.9.3):

    restricted-xml        a DOCTYPE (so no entity declaration, billion laughs or external entity),
                          comment or processing instruction (§11.1); the XML declaration is fine (§11.5)
    not-well-formed       anything else expat refuses: syntax, undefined entities, bad UTF-8 (§11.3)
    bad-namespace-prefix  an unbound prefix, e.g. ``stream:`` never declared (§4.8.5)
    invalid-namespace     a root other than ``{http://etherx.jabber.org/streams}stream`` (§4.8.1)
    bad-format            text other than whitespace between stanzas (§11.7)
    unsupported-encoding  an XML declaration naming an encoding other than UTF-8 (§11.6)
    policy-violation      a stanza over ``max_stanza_size`` bytes, counted as they arrive, so a peer
                          never makes the parser hold more than that plus one feed; or nested deeper
                          than ``MAX_DEPTH`` elements

After STARTTLS (§5.4.3.3) and SASL success (§6.4.6) each side starts a new stream: ``reset()``.
The writers (``stream_header``, ``serialize``, ``stream_error``, ``STREAM_CLOSE``) speak for the
server, whose header declares the content namespace as the default namespace and ``stream`` as the
prefix of the stream namespace (§4.8.5).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from types import MappingProxyType
from xml.parsers import expat

from convergence.message import NOT_XML_CHARS

STREAM_NS = "http://etherx.jabber.org/streams"
STREAM_ERROR_NS = "urn:ietf:params:xml:ns:xmpp-streams"
CLIENT_NS = "jabber:client"
SERVER_NS = "jabber:server"
XML_NS = "http://www.w3.org/XML/1998/namespace"

STREAM_CLOSE = b"</stream:stream>"
MAX_STANZA_SIZE = 256 * 1024
TEXT_BUFFER = 1024  # bytes of character data expat gathers per callback; longer text comes in pieces
MAX_DEPTH = 64  # element levels in one stanza (the stanza is level 1); also bounds _write()'s recursion

#: RFC 6120 §4.9.3.1 to §4.9.3.25.
CONDITIONS = frozenset("""
    bad-format bad-namespace-prefix conflict connection-timeout host-gone host-unknown
    improper-addressing internal-server-error invalid-from invalid-namespace invalid-xml not-authorized
    not-well-formed policy-violation remote-connection-failed reset resource-constraint restricted-xml
    see-other-host system-shutdown undefined-condition unsupported-encoding unsupported-feature
    unsupported-stanza-type unsupported-version""".split())

_EXPAT_CONDITIONS = MappingProxyType(
    {expat.errors.codes[expat.errors.XML_ERROR_UNBOUND_PREFIX]: "bad-namespace-prefix"})
_XML_WHITESPACE = " \t\r\n"
_STREAM_TAG = STREAM_NS + "}stream"  # expat's spelling of {http://etherx.jabber.org/streams}stream


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """The stream header. ``attrs`` holds its attributes by their written names: ``to``, ``from``,
    ``id``, ``version``, ``xml:lang``, and the namespace declarations ``xmlns`` (the content namespace,
    ``jabber:client`` or ``jabber:server``: the session checks which it serves, §4.8.2) and
    ``xmlns:stream``."""
    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class Stanza:
    """A complete first-level element: a stanza (§8) or a negotiation element (STARTTLS, SASL…)."""
    element: ET.Element


@dataclass(frozen=True, slots=True)
class StreamClose:
    """The peer closed its stream (§4.4)."""


Event = StreamOpen | Stanza | StreamClose


class StreamError(Exception):
    """A stream-level error (§4.9): answer with ``stream_error(condition, text)`` and close.

    ``events`` holds what the same feed completed before the error: stanzas taken in must still be
    handled (a message before the bad bytes is not lost).
    """

    def __init__(self, condition: str, text: str | None = None, events: list | None = None):
        super().__init__(condition if text is None else f"{condition}: {text}")
        self.condition = condition
        self.text = text
        self.events = events or []


def _refuse(what: str):
    def handler(*args):
        raise StreamError("restricted-xml", f"{what} not allowed (RFC 6120 §11.1)")
    return handler


# Made once: every stream restart makes a parser, and an idle stream keeps its handlers.
_REFUSE_DTD, _REFUSE_COMMENT, _REFUSE_PI = (_refuse(what) for what in
                                            ("DTD", "comment", "processing instruction"))


def restrict(parser) -> None:
    """Have an expat parser refuse a DTD, comments and processing instructions (§11.1) with a
    ``restricted-xml`` StreamError (the DTD as it starts: no entity can be declared)."""
    parser.StartDoctypeDeclHandler = _REFUSE_DTD
    parser.CommentHandler = _REFUSE_COMMENT
    parser.ProcessingInstructionHandler = _REFUSE_PI


def _tag(name: str) -> str:
    """expat's ``uri}local`` as ElementTree's ``{uri}local``."""
    return "{" + name if "}" in name else name


def _header_name(name: str) -> str:
    uri, _, local = name.rpartition("}")
    return "xml:" + local if uri == XML_NS else _tag(name)


class StreamParser:
    """Incremental parser for the stream one peer sends (§4.1)."""

    def __init__(self, max_stanza_size: int = MAX_STANZA_SIZE):
        self.max_stanza_size = max_stanza_size
        self.reset()

    def reset(self) -> None:
        """Forget the old stream and expect a new header (restarts: §4.3.3, §5.4.3.3, §6.4.6)."""
        parser = expat.ParserCreate("utf-8", "}")
        parser.buffer_text = True
        parser.buffer_size = TEXT_BUFFER  # the default 8 KiB buffer costs ~15 KB per idle stream
        # expat >= 2.6 may defer reparsing a partial token until more data arrives, which would
        # hold back a stanza whose last bytes were fed; a stream needs each stanza once complete.
        if hasattr(parser, "SetReparseDeferralEnabled"):
            parser.SetReparseDeferralEnabled(False)
        parser.XmlDeclHandler = self._xml_declaration
        # A DOCTYPE is refused as it starts, so no entity can be declared and no external entity or
        # parameter entity read: handlers for those could never fire.
        restrict(parser)
        parser.StartNamespaceDeclHandler = self._namespace_declaration
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._data
        self._parser = parser
        self._events: list[Event] = []
        self._error: StreamError | None = None
        self._namespaces: dict[str, str] = {}
        self._depth = 0  # open elements: 1 inside the stream, 2 or more inside a stanza
        self._tree: ET.TreeBuilder | None = None
        self._received = 0  # bytes fed since reset()
        self._stanza_start = 0  # byte offset of the current stanza's first byte

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next bytes of the stream; return the events they completed, in order."""
        if self._error is not None:
            raise StreamError(self._error.condition, self._error.text)
        self._received += len(data)
        try:
            self._parser.Parse(data, False)
            # Bytes not yet part of a complete event: the open stanza, or a partial token between.
            start = self._stanza_start if self._depth > 1 else self._parser.CurrentByteIndex
            self._check_size(self._received - start)
        except expat.ExpatError as exc:
            self._error = StreamError(_EXPAT_CONDITIONS.get(exc.code, "not-well-formed"), str(exc),
                                      self._events)
            self._events = []
            raise self._error from exc
        except StreamError as exc:
            exc.events, self._events = self._events, []
            self._error = exc
            raise
        events, self._events = self._events, []
        return events

    def _check_size(self, size: int) -> None:
        if size > self.max_stanza_size:
            raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")

    def _xml_declaration(self, version, encoding, standalone):
        if encoding is not None and encoding.lower() != "utf-8":
            raise StreamError("unsupported-encoding", "XMPP streams are UTF-8 (RFC 6120 §11.6)")

    def _namespace_declaration(self, prefix, uri):
        self._namespaces["xmlns" if prefix is None else "xmlns:" + prefix] = uri

    def _start(self, name, attrs):
        depth = self._depth = self._depth + 1
        if depth == 1:
            self._open(name, attrs)
            return
        if depth == 2:
            self._tree = ET.TreeBuilder()
            self._stanza_start = self._parser.CurrentByteIndex
        elif depth > MAX_DEPTH + 1:
            raise StreamError("policy-violation", f"elements nested deeper than {MAX_DEPTH}")
        if attrs:  # _tag() inlined here and below: this is the parser's hot path
            attrs = {"{" + key if "}" in key else key: value for key, value in attrs.items()}
        self._tree.start("{" + name if "}" in name else name, attrs)

    def _open(self, name, attrs):
        if name != _STREAM_TAG:
            raise StreamError("invalid-namespace", f"expected {{{STREAM_NS}}}stream, got {_tag(name)}")
        self._parser.StartNamespaceDeclHandler = None  # only the header's declarations are news
        header = {_header_name(key): value for key, value in attrs.items()}
        self._events.append(StreamOpen(self._namespaces | header))

    def _end(self, name):
        depth = self._depth = self._depth - 1
        if depth == 0:
            self._events.append(StreamClose())
            return
        self._tree.end("{" + name if "}" in name else name)
        if depth == 1:
            self._check_size(self._parser.CurrentByteIndex - self._stanza_start)
            self._events.append(Stanza(self._tree.close()))
            self._tree = None

    def _data(self, data):
        if self._depth > 1:
            self._tree.data(data)
        elif data.strip(_XML_WHITESPACE):
            raise StreamError("bad-format", "text between stanzas")


# ---- writing -------------------------------------------------------------------------------------

_ENTITIES = MappingProxyType({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;",
                              "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})
_TEXT = re.compile(f"[&<>\r{NOT_XML_CHARS}]")
_ATTR = re.compile(f"[&<>'\"\t\n\r{NOT_XML_CHARS}]")


class EventStream:
    """What a client session (c2s.py) and a server stream (s2s.py) share to read their peer:
    ``receive(bytes)`` feeds ``self.parser`` and hands each event, in order, to ``_open(attrs)``
    (a stream header), ``close()`` (the peer's ``</stream:stream>``, RFC 6120 §4.4) or
    ``_element(element)``, until the stream is ``closed`` or restarts (``generation`` changed:
    the old stream's leftovers are void, §4.3.3). Bytes that break the XML rules end the stream
    with the parser's condition (§4.9.3), after the events that came before them."""

    __slots__ = ()

    def receive(self, data: bytes) -> None:
        """Bytes from the peer: parse and handle every event they complete."""
        if self.closed:
            return
        try:
            events = self.parser.feed(data)
        except StreamError as exc:
            self._handle(exc.events)  # what came before the bad bytes still counts
            self.close(exc.condition, exc.text)
            return
        self._handle(events)

    def _handle(self, events) -> None:
        generation = self.generation
        for event in events:
            if self.closed or self.generation != generation:
                return  # closed, or the stream restarted: the old stream's leftovers are void
            if isinstance(event, StreamOpen):
                self._open(event.attrs)
            elif isinstance(event, StreamClose):
                self.close()
            else:
                self._element(event.element)


def _entity(match: re.Match) -> str:
    try:
        return _ENTITIES[match[0]]
    except KeyError:
        raise ValueError(f"{match[0]!r} is not a character XML 1.0 can carry") from None


def stream_header(from_: str, to: str | None, id: str, version: str = "1.0", lang: str = "en",
                  ns: str = CLIENT_NS) -> bytes:
    """The XML declaration and a ``<stream:stream>`` header (§4.7); a ``None`` attribute is left out."""
    attrs = {"from": from_, "to": to, "id": id, "version": version, "xml:lang": lang, "xmlns": ns,
             "xmlns:stream": STREAM_NS}
    written = "".join(f" {name}='{_ATTR.sub(_entity, value)}'" for name, value in attrs.items()
                      if value is not None)
    return f"<?xml version='1.0'?><stream:stream{written}>".encode()


def serialize(element: ET.Element, ns: str = CLIENT_NS) -> bytes:
    """``element`` as written inside a stream whose content namespace is ``ns`` (§4.8.2, §4.8.5).

    Elements in ``ns`` carry no declaration; any other namespace becomes a default-namespace
    declaration (``xmlns='…'``), never a generated prefix; the stream namespace keeps the header's
    ``stream:`` prefix. Attributes in a namespace other than ``xml:`` need a prefix: ``a0``, ``a1``…
    declared on their element. Raises ValueError for characters XML 1.0 cannot carry (§11.3).
    """
    out: list[str] = []
    _write(out.append, element, ns)
    return "".join(out).encode()


def serialize_children(elements, ns: str = CLIENT_NS) -> str:
    """``elements`` (each with its tail) as ``serialize`` writes them inside a parent whose
    namespace is ``ns``: text, for a caller writing the parent itself."""
    out: list[str] = []
    for element in elements:
        _write(out.append, element, ns)
        if element.tail:
            out.append(_TEXT.sub(_entity, element.tail))
    return "".join(out)


def as_bytes(stanza: ET.Element | bytes) -> bytes:
    """A stanza to send: an element serialized (``serialize``), or bytes already written."""
    return stanza if type(stanza) is bytes else serialize(stanza)


def _write(write, element: ET.Element, default_ns: str) -> None:
    uri, _, name = element.tag[1:].rpartition("}") if element.tag[0] == "{" else ("", "", element.tag)
    written = []
    if uri == STREAM_NS:
        name = "stream:" + name
    elif uri != default_ns:
        written.append(("xmlns", uri))
        default_ns = uri
    prefixes: dict[str, str] = {}
    for key, value in element.attrib.items():
        if key[0] == "{":
            key_uri, _, key = key[1:].rpartition("}")
            if key_uri == XML_NS:
                key = "xml:" + key
            else:
                if key_uri not in prefixes:
                    prefixes[key_uri] = f"a{len(prefixes)}"
                    written.append(("xmlns:" + prefixes[key_uri], key_uri))
                key = f"{prefixes[key_uri]}:{key}"
        written.append((key, value))
    write("<" + name + "".join(f" {key}='{_ATTR.sub(_entity, value)}'" for key, value in written))
    if element.text is None and not len(element):
        write("/>")
        return
    write(">")
    if element.text:
        write(_TEXT.sub(_entity, element.text))
    for child in element:
        _write(write, child, default_ns)
        if child.tail:
            write(_TEXT.sub(_entity, child.tail))
    write(f"</{name}>")


def stream_error(condition: str, text: str | None = None) -> bytes:
    """A ``<stream:error>`` (§4.9.2) with a §4.9.3 ``condition``, then the closing ``</stream:stream>``."""
    if condition not in CONDITIONS:
        raise ValueError(f"{condition!r} is not an RFC 6120 §4.9.3 stream error condition")
    error = ET.Element(f"{{{STREAM_NS}}}error")
    ET.SubElement(error, f"{{{STREAM_ERROR_NS}}}{condition}")
    if text is not None:
        ET.SubElement(error, f"{{{STREAM_ERROR_NS}}}text").text = text
    return serialize(error) + STREAM_CLOSE
