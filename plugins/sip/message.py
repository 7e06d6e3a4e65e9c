"""SIP messages: parse and serialize (RFC 3261 §7, §20, §25; checked against RFC 4475).

Rules of this file: it cannot do any I/O (no sockets, no gevent, no clock; stdlib only). Bytes go
in, :class:`Request` / :class:`Response` / :class:`KeepAlive` come out; ``bytes(message)`` goes
back. The transport owns the sockets and decides what a :class:`ParseError` costs: answer it with
``err.response()`` unless ``err.drop``, and close the connection when ``err.fatal``.

- Framing: :func:`parse_datagram` (one message per UDP datagram) and :class:`StreamParser`
  (Content-Length framing on TCP/TLS, CRLF keep-alives), RFC 3261 §18.3, RFC 5626 §4.4.1.
- :class:`Headers` keeps the fields in order with their names as received; lookups ignore case and
  know the compact forms (§7.3.3). Folded lines are unfolded (§7.3.1); list-valued fields are split
  into one entry per value at the commas outside quotes and ``<>``; other fields are never split.
- Typed values (``msg.via``, ``msg.cseq``, ``msg.to``...) are read from those strings on every
  access, so editing ``msg.headers`` never leaves a stale copy behind; what a string parses to is
  cached by the string itself (:data:`CACHED` per kind, shared between messages: URIs and Via,
  From, To... recur within a message's handling and between messages), so the same text is parsed
  once. Typed values are frozen; their ``params``/``headers`` dicts are shared: read-only too.
- Every message read passes the stateless checks of §8.2.1–§8.2.2, §16.3 step 1 and §18.1.2;
  errors say what is wrong in the reason phrase (§21.4.1: "Missing Call-ID header field"). A CR
  that ends no line, or a NUL outside a quoted-pair, is refused (400, the §25.1 grammar): what is
  read can always be written back in an answer.
- Reading costs time linear in the message's size, whatever the input: unfolding is one scan, and
  every repetition in the regular expressions is possessive, so none can backtrack
  (tests/sip/test_parse_cost.py measures it).
- Reading is the hot path (bench/sip_parser.py): the usual shapes of a start line, name-addr and
  list value are read in one regex match each, anything else step by step, with the same result
  and errors; validation reads each typed value once without building its object.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import ClassVar, Iterable, Iterator

MAX_MESSAGE_SIZE = 65535  # bytes, StreamParser default
MAX_LINE_SIZE = 8192  # characters in one unfolded header field line
CACHED = 512  # parses kept per kind of typed value (each reader and each ``parse``), the latest

#: RFC 3261 §7.3.3 and the IANA SIP header registry: compact form → full name.
COMPACT_FORMS = MappingProxyType({
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "o": "Event", "r": "Refer-To", "s": "Subject",
    "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
})

#: RFC 3261 §21 reason phrases (plus 202 from RFC 3428/6665 and 489 from RFC 6665).
REASONS = MappingProxyType({
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized", 402: "Payment Required",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
})

# Fields whose grammar is a comma-separated list (§7.3.1 and the RFCs defining them).
_LIST_FIELDS = frozenset("""accept accept-contact accept-encoding accept-language alert-info allow
    allow-events call-info contact content-encoding content-language error-info in-reply-to
    p-asserted-identity p-preferred-identity path proxy-require reason record-route reject-contact
    request-disposition require route service-route supported unsupported via warning""".split())
_REQUIRED = ("To", "From", "CSeq", "Call-ID", "Via")  # §8.1.1; Max-Forwards may lack (§16.3)
_REQUIRED_KEYS = frozenset(name.lower() for name in _REQUIRED)
_SINGLE = ("To", "From", "CSeq", "Call-ID", "Max-Forwards")  # at most one value (RFC 4475 §3.3.8)
_KNOWN_METHODS = frozenset("ACK BYE CANCEL INFO INVITE MESSAGE NOTIFY OPTIONS PRACK PUBLISH REFER "
                           "REGISTER SUBSCRIBE UPDATE".split())
_COPIED_ONCE = ("from", "to", "call-id", "cseq")  # §8.2.6.2

# RFC 3261 §25.1 grammar pieces. Every repetition is possessive (``++``, ``*+``): a pattern never
# gives back what it read to try another split, so no match costs more than one pass over the
# text, whatever an attacker sends (tests/sip/test_parse_cost.py). Each possessive repetition is
# followed by something it cannot read, so it matches what the greedy one would.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]"
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]"
_QUOTED = r'"(?:[^"\\]++|\\.)*+"'
_HOST = r"\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9\-.]++"
_TOKEN_RE = re.compile(f"{_TOKEN}++")
_QUOTED_RE = re.compile(_QUOTED, re.S)
_DISPLAY_TOKENS = rf"{_TOKEN}++(?:\s++{_TOKEN}++)*+"
_DISPLAY_TOKENS_RE = re.compile(_DISPLAY_TOKENS)
_URI = r"[A-Za-z][A-Za-z0-9+\-.]*+:[^\s<>\"]++"
_URI_RE = re.compile(_URI)
# The usual name-addr, display name (quoted or tokens) optional: ``NameAddr.parse`` in one match.
_NAME_ADDR_RE = re.compile(rf"(?:({_QUOTED})\s*+|({_DISPLAY_TOKENS})\s*+)?<({_URI})>(.*)", re.S)
_PARAM_RE = re.compile(
    rf"\s*+;\s*+({_TOKEN}++)(?:\s*+=\s*+({_QUOTED}|[A-Za-z0-9\-.!%*_+`'~\[\]:]++))?\s*+", re.S)
_SIP_URI_RE = re.compile(
    rf"(sips?):(?:([^@]*+)@)?({_HOST})(?::(\d++))?((?:;[^;?]*+)*+)(?:\?(.*))?", re.I | re.S)
_VIA_RE = re.compile(rf"({_TOKEN}++)\s*+/\s*+({_TOKEN}++)\s*+/\s*+({_TOKEN}++)\s++({_HOST})"
                     rf"(?:\s*+:\s*+(\d++))?(.*)", re.S)
_CSEQ_RE = re.compile(rf"(\d++)\s++({_TOKEN}++)")
_CALL_ID_RE = re.compile(rf"{_WORD}++(?:@{_WORD}++)?")
_QVALUE_RE = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")
_VERSION_RE = re.compile(r"SIP/\d++\.\d++", re.I)
_REQUEST_LINE_RE = re.compile(rf"({_TOKEN}++) ({_URI}) SIP/2\.0")  # the usual one, in one match
_STATUS_LINE_RE = re.compile(r"(SIP/\d++\.\d++) (\d++)(?: (.*))?", re.I | re.S)
_FIELD_NAME_RE = re.compile(rf"({_TOKEN}++)[ \t]*+")
_LIST_ITEM_RE = re.compile(rf'(?:[^,"<]++|{_QUOTED}|<[^>]*+>)*+', re.S)
_ESCAPE_RE = re.compile(r"\\(.)", re.S)  # quoted-pair


class ParseError(Exception):
    """A message that cannot be accepted; ``status`` and ``reason`` are the answer (§21.4.1).

    ``headers`` and ``method`` are what was read of the message, set when the error is raised while
    reading one. ``drop`` says not to answer: responses are never answered (§18.1.2, RFC 4475
    §3.1.2.5, §3.1.2.19), nor ACKs (§17.2.1), nor messages too broken to address a reply to.
    ``fatal`` says a stream lost its framing: answer unless ``drop``, then close (RFC 4475 §3.3.9).
    """

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason
        self.headers: Headers | None = None
        self.method: str | None = None
        self.fatal = False

    @property
    def drop(self) -> bool:
        return self.headers is None or self.method in (None, "ACK")

    def response(self) -> Response:
        """The error response, built like any other (§8.2.6.2) from the headers read."""
        if self.drop:
            raise ValueError(f"{self} must not be answered")
        return _reply(self.headers, self.status, self.reason)


@lru_cache(maxsize=512)  # the same few dozen names, looked up on every access
def _key(name: str) -> str:
    name = name.lower()
    full = COMPACT_FORMS.get(name)
    return full.lower() if full else name


class Headers:
    """Header fields in order, multi-valued, names case-insensitive and compact forms understood.

    Iterating yields ``(name, value)`` with names as received; ``Headers([("v", "...")])`` is found
    by ``get("Via")``. Values are strings, unfolded; list-valued fields hold one value per entry.
    Lookups cost one dict access: besides the fields in order, an index maps each canonical key
    (``_key``) to its values in order, kept in step by every method that edits.
    """

    def __init__(self, fields: Iterable[tuple[str, str]] = ()):
        self._fields = [(_key(name), name, value) for name, value in fields]  # name as received
        self._index: dict[str, list[str]] = {}  # key → values in order, never an empty list
        for key, _, value in self._fields:
            self._index.setdefault(key, []).append(value)

    @classmethod
    def _read(cls, fields: list[tuple[str, str, str]], index: dict[str, list[str]]) -> Headers:
        """Headers holding fields and index as the parser made them, in one go."""
        headers = cls.__new__(cls)
        headers._fields, headers._index = fields, index
        return headers

    def _append(self, key: str, name: str, value: str) -> None:
        self._fields.append((key, name, value))
        values = self._index.get(key)
        if values is None:
            self._index[key] = [value]
        else:
            values.append(value)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Headers) else NotImplemented

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def __contains__(self, name: str) -> bool:
        return _key(name) in self._index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of the field, or ``default``."""
        values = self._index.get(_key(name))
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(_key(name), ()))

    def add(self, name: str, value: str) -> None:
        self._append(_key(name), name, value)

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first field of that name (a proxy's Via, Record-Route: §16.6)."""
        key = _key(name)
        self._fields.insert(self._first(key, 0), (key, name, value))
        self._index.setdefault(key, []).insert(0, value)

    def set(self, name: str, value: str) -> None:
        """Replace every value of the field by one, where the first was (else at the end)."""
        key = _key(name)
        at = self._first(key, len(self._fields))
        self.remove(name)
        self._fields.insert(at, (key, name, value))
        self._index[key] = [value]

    def remove(self, name: str) -> None:
        key = _key(name)
        if self._index.pop(key, None) is not None:
            self._fields = [f for f in self._fields if f[0] != key]

    def pop(self, name: str) -> str:
        """Remove and return the first value (the top Via of a response, §16.7 step 3)."""
        key = _key(name)
        values = self._index.get(key)
        if not values:
            raise KeyError(name)
        del self._fields[self._first(key, None)]
        if len(values) == 1:
            del self._index[key]
        return values.pop(0)

    def _first(self, key: str, default: int | None) -> int | None:
        """Where the first field with that key is, or ``default``."""
        return next((i for i, (k, _, _) in enumerate(self._fields) if k == key), default)


# ---- typed values (§19.1, §20, §25.1) ----------------------------------------------------------

def _integer(text: str, what: str, maximum: int) -> int:
    """1*DIGIT within 0..maximum (§25.1; RFC 4475 §3.1.2.3–§3.1.2.5: negative, overlarge)."""
    text = text.strip()
    if not (text.isdigit() and text.isascii()):
        raise ParseError(400, f"Negative {what}" if text[1:].isdigit() and text[0] == "-"
                         else f"{what} is not a number")
    value = int(text) if len(text) <= 20 or len(text.lstrip("0")) <= 20 else None  # int() of
    if value is None or value > maximum:  # thousands of digits is slow, and refused
        raise ParseError(400, f"{what} out of range")
    return value


def _port(text: str | None) -> int | None:
    return None if text is None else _integer(text, "port", 65535)


def _params(text: str) -> dict[str, str | None]:
    """``*( SEMI generic-param )``; names lower-cased, values as written (quotes kept)."""
    params, pos, text = {}, 0, text.strip()
    while pos < len(text):
        match = _PARAM_RE.match(text, pos)
        if not match:
            raise ParseError(400, "malformed parameters")
        params[match[1].lower()] = match[2]
        pos = match.end()
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{name}" if value is None else f";{name}={value}"
                   for name, value in params.items())


def _unquote(quoted: str) -> str:
    text = quoted[1:-1]
    return _ESCAPE_RE.sub(r"\1", text) if "\\" in text else text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _typed(name: str, parse, value: str):
    """Parse a header value; a ParseError names the field."""
    try:
        return parse(value)
    except ParseError as err:
        raise _named(name, err) from None


def _named(name: str, err: ParseError) -> ParseError:
    """``err`` again, naming the header field it was found in."""
    return ParseError(err.status, f"Bad {name} header field: {err.reason}")


# The readers below return a typed value's fields in order: ``X.parse`` builds the object from
# them, message validation only reads (building the objects would cost as much again). Both are
# cached by text: what validation read, a later ``X.parse`` of the same text only builds.

@lru_cache(maxsize=CACHED)
def _read_sip_uri(text: str) -> tuple:
    match = _SIP_URI_RE.fullmatch(text)
    if not match or match[2] == "":
        raise ParseError(400, "malformed SIP URI")
    scheme, userinfo, host, port, param_text, header_text = match.groups()
    params = {}
    for param in param_text.split(";")[1:]:
        name, eq, value = param.partition("=")
        if not name:
            raise ParseError(400, "empty URI parameter")
        params[name.lower()] = value if eq else None
    headers = dict(h.partition("=")[::2] for h in header_text.split("&")) if header_text else {}
    user, colon, password = (userinfo or "").partition(":")
    return (scheme.lower(), host.lower(), userinfo and user, password if colon else None,
            _port(port), params, headers)


@dataclass(frozen=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (§19.1.1). Parts stay as written, %-escapes included; scheme
    and host are lower-cased, parameter names too."""
    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    @lru_cache(maxsize=CACHED)
    def parse(cls, text: str) -> SipUri:
        return cls(*_read_sip_uri(text))

    def __str__(self) -> str:
        userinfo = "" if self.user is None else (
            self.user + ("" if self.password is None else f":{self.password}") + "@")
        port = "" if self.port is None else f":{self.port}"
        headers = "&".join(f"{name}={value}" for name, value in self.headers.items())
        return (f"{self.scheme}:{userinfo}{self.host}{port}{_format_params(self.params)}"
                + (f"?{headers}" if headers else ""))


@lru_cache(maxsize=CACHED)
def _read_name_addr(text: str) -> tuple:
    text = text.strip()
    match = _NAME_ADDR_RE.fullmatch(text)
    if not match:
        return _read_name_addr_step_by_step(text)
    quoted, tokens, uri, params = match.groups()
    return uri, tokens if quoted is None else _unquote(quoted), _params(params)


def _read_name_addr_step_by_step(text: str) -> tuple:
    """Any form, the ``addr-spec`` without ``<>`` too, and the errors that say what is wrong;
    ``_read_name_addr`` reads the usual forms in one regex match, with the same result."""
    display = None
    if text.startswith('"'):
        quoted = _QUOTED_RE.match(text)
        if not quoted:
            raise ParseError(400, "unterminated quoted string")  # RFC 4475 §3.1.2.6
        display, text = _unquote(quoted[0]), text[quoted.end():].lstrip()
        if not text.startswith("<"):
            raise ParseError(400, "display name without <URI>")
    elif "<" in text:
        name, _, rest = text.partition("<")
        if name.strip() and not _DISPLAY_TOKENS_RE.fullmatch(name.strip()):
            raise ParseError(400, "display name must be tokens or a quoted string")  # §3.1.2.15
        display, text = name.strip() or None, "<" + rest
    if text.startswith("<"):
        uri, closed, params = text[1:].partition(">")
        if not closed:
            raise ParseError(400, "missing >")
        if uri != uri.strip():
            raise ParseError(400, "spaces within addr-spec")  # RFC 4475 §3.1.2.14
    else:  # §20: a URI with a comma, question mark or semicolon must be in <>
        uri, semi, params = text.partition(";")
        uri, params = uri.rstrip(), semi + params
        if "?" in uri or "," in uri:
            raise ParseError(400, "a URI with headers must be enclosed in <>")  # §3.1.2.13
    if not _URI_RE.fullmatch(uri):
        raise ParseError(400, "malformed URI")
    return uri, display, _params(params)


@dataclass(frozen=True)
class NameAddr:
    """``name-addr`` or ``addr-spec`` plus header parameters (§20.10, §20.20, §20.39, §25.1): the
    value of From, To, Contact, Route... ``uri`` is any scheme, as written; ``display_name`` is
    unquoted. A Contact of ``*`` (§10.2.2) is ``NameAddr("*")``."""
    uri: str
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    @lru_cache(maxsize=CACHED)
    def parse(cls, text: str) -> NameAddr:
        return cls(*_read_name_addr(text))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter (§10.2.1.1); ParseError when out of 0..2**32-1."""
        if "expires" not in self.params:
            return None
        return _integer(self.params["expires"] or "", "expires", 2**32 - 1)

    @property
    def q(self) -> float | None:
        """The Contact ``q`` parameter (§20.10 qvalue)."""
        value = self.params.get("q")
        if value is not None and not _QVALUE_RE.fullmatch(value):
            raise ParseError(400, "q must be a qvalue between 0 and 1")
        return None if value is None else float(value)

    def __str__(self) -> str:
        if self.uri == "*":
            return "*"
        name = "" if self.display_name is None else _quote(self.display_name) + " "
        return f"{name}<{self.uri}>{_format_params(self.params)}"


@lru_cache(maxsize=CACHED)
def _read_via(text: str) -> tuple:
    match = _VIA_RE.fullmatch(text.strip())
    if not match:
        raise ParseError(400, "malformed sent-protocol or sent-by")
    protocol, version, transport, host, port, params = match.groups()
    return (transport.upper(), host.lower(), _port(port), _params(params),
            f"{protocol}/{version}".upper())


@dataclass(frozen=True)
class Via:
    """One ``via-parm`` (§20.42, §18.2.1): sent-protocol, sent-by and parameters. ``protocol``
    and ``transport`` are upper-cased, ``host`` lower-cased."""
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    @lru_cache(maxsize=CACHED)
    def parse(cls, text: str) -> Via:
        return cls(*_read_via(text))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The port a server filled in (RFC 3581 §4); ``"rport" in params`` is the client's ask."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{_format_params(self.params)}"


@lru_cache(maxsize=CACHED)
def _read_cseq(text: str) -> tuple[int, str]:
    match = _CSEQ_RE.fullmatch(text.strip())
    if not match:
        raise ParseError(400, "expected a number and a method")
    return _integer(match[1], "sequence number", 2**32 - 1), match[2]


@dataclass(frozen=True)
class CSeq:
    """§20.16: a sequence number below 2**32 and the request method."""
    number: int
    method: str

    @classmethod
    @lru_cache(maxsize=CACHED)
    def parse(cls, text: str) -> CSeq:
        return cls(*_read_cseq(text))

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# ---- messages (§7) -----------------------------------------------------------------------------

class Message:
    """What requests and responses share: typed accessors and serialization."""
    headers: Headers
    body: bytes

    def _one(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(400, f"Missing {name} header field")
        return value

    def _about(self, err: ParseError) -> None:
        """Let ``err``, raised while reading this message, carry what is needed to answer it."""
        err.headers, err.method = self.headers, getattr(self, "method", None)

    @property
    def via(self) -> list[Via]:
        """All Via values, top first."""
        return [_typed("Via", Via.parse, value) for value in self.headers._index.get("via", ())]

    @property
    def from_(self) -> NameAddr:
        return _typed("From", NameAddr.parse, self._one("From"))

    @property
    def to(self) -> NameAddr:
        return _typed("To", NameAddr.parse, self._one("To"))

    @property
    def call_id(self) -> str:
        return self._one("Call-ID")

    @property
    def cseq(self) -> CSeq:
        return _typed("CSeq", CSeq.parse, self._one("CSeq"))

    @property
    def max_forwards(self) -> int | None:
        """§20.22: 0..255, None when absent."""
        value = self.headers.get("Max-Forwards")
        return None if value is None else _integer(value, "Max-Forwards", 255)

    @property
    def contacts(self) -> list[NameAddr]:
        """All Contact values; ``Contact: *`` (§10.2.2) is ``[NameAddr("*")]``."""
        values = self.headers._index.get("contact", ())
        if "*" in values:
            if len(values) > 1:
                raise ParseError(400, "Contact * must be the only Contact value")
            return [NameAddr("*")]
        return [_typed("Contact", NameAddr.parse, value) for value in values]

    @property
    def expires(self) -> int | None:
        """The Expires header field (§20.19), None when absent; ParseError when out of range."""
        value = self.headers.get("Expires")
        return None if value is None else _integer(value, "Expires", 2**32 - 1)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    def serialize(self) -> bytes:
        """Wire bytes (§7): start line, fields in order under their names as received, with
        Content-Length set from the body (§20.14; added last if missing), empty line, body."""
        length, lines = str(len(self.body)), [self.start_line]
        for key, name, value in self.headers._fields:
            if key == "content-length":
                if length is None:  # already written: drop duplicates
                    continue
                value, length = length, None
            lines.append(f"{name}: {value}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        head = "\r\n".join(lines)
        if head.count("\r") >= len(lines) or head.count("\n") >= len(lines):  # beyond the joins
            raise ValueError("CR or LF inside the start line or a header field")
        return (head + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


@dataclass
class Request(Message):
    """§7.1: Request-Line, header fields, body."""
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    @property
    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass
class Response(Message):
    """§7.2: Status-Line, header fields, body."""
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    @property
    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


@dataclass(frozen=True)
class KeepAlive:
    """A CRLF keep-alive (RFC 5626 §4.4.1). On a stream it is a double-CRLF "ping", which the
    transport answers with ``PONG``; a datagram holding only CRLFs is reported the same way."""
    PONG: ClassVar[bytes] = b"\r\n"


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The response to ``request`` (§8.2.6.2): Via (all, in order), From, To, Call-ID and CSeq
    copied; ``to_tag`` added to To when it has none; Timestamp copied into a 100 (§8.2.6.1);
    ``headers`` appended. ``reason`` defaults to the §21 phrase."""
    response = _reply(request.headers, status,
                      REASONS.get(status, "") if reason is None else reason, to_tag)
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _reply(headers: Headers, status: int, reason: str, to_tag: str | None = None) -> Response:
    """§8.2.6.2 copying, shared by :func:`make_response` and :meth:`ParseError.response`."""
    copied, seen = Headers(), set()
    for key, name, value in headers._fields:
        if key in _COPIED_ONCE and key not in seen:
            seen.add(key)
            if key == "to" and to_tag and NameAddr.parse(value).tag is None:
                value += f";tag={to_tag}"
        elif not (key == "via" or key == "timestamp" and status == 100):
            continue
        copied._append(key, name, value)
    return Response(status, reason, copied)


# ---- reading (§7, §8.2, §18.3) -----------------------------------------------------------------

@lru_cache(maxsize=512)  # the same few dozen names, on every line read
def _field_name(text: str) -> tuple[str, str] | None:
    """What precedes a header line's first colon, ``token *(SP / HTAB)`` (§7.3.1 HCOLON): the
    name as written and its key, or None when it is something else."""
    match = _FIELD_NAME_RE.fullmatch(text)
    return (match[1], _key(match[1])) if match else None


def _bad_line(line: str, max_line_size: int) -> ParseError:
    """What is wrong with a line that is not ``field-name HCOLON field-value``."""
    if len(line) > max_line_size:
        return ParseError(513, "Header line too long")
    return ParseError(400, "Malformed header line")


def _split(value: str) -> list[str]:
    """Split at the commas outside quoted strings and ``<>``."""
    if not ("," in value or "<" in value or '"' in value):
        return [value]  # the usual Via
    items, pos = [], 0
    while True:
        end = _LIST_ITEM_RE.match(value, pos).end()
        if end < len(value) and value[end] != ",":
            problem = "missing >" if value[end] == "<" else "unterminated quoted string"
            raise ParseError(400, problem)
        items.append(value[pos:end].strip())
        if end == len(value):
            return items
        pos = end + 1


def _start_line(line: str, headers: Headers) -> Request | Response:
    """§7.1 Request-Line / §7.2 Status-Line: single SPs, nothing trailing (RFC 4475 §3.1.2.7–10)."""
    usual = _REQUEST_LINE_RE.fullmatch(line)  # passes every check below
    if usual:
        return Request(usual[1], usual[2], headers)
    if line[:4].upper() == "SIP/":
        match = _STATUS_LINE_RE.fullmatch(line)
        if not match:
            raise ParseError(400, "Malformed Status-Line")
        if len(match[2]) != 3 or match[2][0] not in "123456":
            raise ParseError(400, "Status code out of range")  # RFC 4475 §3.1.2.19
        if match[1].upper() != "SIP/2.0":
            raise ParseError(505, "Version Not Supported")
        return Response(int(match[2]), match[3] or "", headers, version=match[1])
    if line != line.rstrip():
        raise ParseError(400, "Trailing whitespace in Request-Line")
    parts = line.split(" ")
    if "" in parts:
        raise ParseError(400, "Multiple spaces in Request-Line")
    if len(parts) != 3:
        raise ParseError(400, "Whitespace in Request-URI" if len(parts) > 3
                         else "Malformed Request-Line")
    method, uri, version = parts
    if not _TOKEN_RE.fullmatch(method):
        raise ParseError(400, "Malformed method")
    if not _VERSION_RE.fullmatch(version):
        raise ParseError(400, "Malformed SIP-Version")
    if version.upper() != "SIP/2.0":
        raise ParseError(505, "Version Not Supported")  # RFC 4475 §3.1.2.16
    if not _URI_RE.fullmatch(uri):
        raise ParseError(400, "Malformed Request-URI")
    return Request(method, uri, headers, version=version)


def _unfold(lines: list[str]) -> list[str]:
    """A line that starts with SP or HTAB continues the one before, and the ``LWS = [*WSP CRLF]
    1*WSP`` between them reads as one SP (§7.3.1). One pass: each line's pieces joined once."""
    unfolded: list[list[str]] = []
    for line in lines:
        if unfolded and line[:1] in (" ", "\t"):
            pieces = unfolded[-1]
            pieces[-1] = pieces[-1].rstrip(" \t")
            pieces.append(line.lstrip(" \t"))
        else:
            unfolded.append([line])
    return [" ".join(pieces) for pieces in unfolded]


def _bad_characters(line: str, where: str) -> ParseError | None:
    """A CR that does not end a line, or a NUL outside a quoted-pair: the §25.1 grammar allows
    neither in a start line or a header field (a NUL only as ``\\`` NUL in a quoted string, as
    RFC 4475 §3.1.1.2 has it; a bare LF always ends a line)."""
    if "\r" in line:
        return ParseError(400, f"Bare CR in {where} (RFC 3261 section 25.1)")
    at = line.find("\0")
    while at >= 0:  # each NUL must follow an odd run of backslashes (runs apart: one pass)
        escape = at
        while escape and line[escape - 1] == "\\":
            escape -= 1
        if (at - escape) % 2 == 0:
            return ParseError(400, f"NUL in {where} (RFC 3261 section 25.1)")
        at = line.find("\0", at + 1)
    return None


def _parse_head(head: bytes, max_line_size: int) -> Request | Response:
    """Start line and header fields, unfolded; bad field lines are skipped so that the error
    raised still carries the fields needed to answer it."""
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    rest = "".join(lines)  # what is not a line end; a search of it (memchr) is cheaper than counts
    if "\n" in rest:  # bare LFs end lines too (tolerated; CRLF is always written)
        lines = [line[:-1] if line[-1:] == "\r" else line for line in text.split("\n")]
        rest = "".join(lines)
    suspect = "\r" in rest or "\0" in rest  # a bare CR or a NUL somewhere: in which line?
    if "\n " in text or "\n\t" in text:  # else there is no folding to undo
        lines = _unfold(lines)
    start, *lines = lines
    problem = None  # the first bad line's error
    if suspect:
        kept = []
        for line in lines:
            bad = _bad_characters(line, "a header field")
            if bad is None:
                kept.append(line)
            else:
                problem = problem or bad
        lines = kept
    fields, index = [], {}  # what Headers holds
    for line in lines:
        name, colon, value = line.partition(":")
        name_key = _field_name(name) if colon and len(line) <= max_line_size else None
        if name_key is None:
            problem = problem or _bad_line(line, max_line_size)
            continue
        name, key = name_key
        value = value.strip()
        if key not in _LIST_FIELDS:
            fields.append((key, name, value))
            index.setdefault(key, []).append(value)
            continue
        try:  # list-valued: one field per value (§7.3.1)
            values = _split(value)
        except ParseError as err:
            problem = problem or _named(COMPACT_FORMS.get(name.lower(), name), err)
            continue
        fields += [(key, name, item) for item in values]
        index.setdefault(key, []).extend(values)
    headers = Headers._read(fields, index)
    try:
        if len(start) > max_line_size:
            raise ParseError(513, "Start line too long")
        if suspect and (bad := _bad_characters(start, "the start line")):
            raise bad
        message = _start_line(start, headers)
        if problem:
            raise problem
    except ParseError as err:  # carrying what is needed to answer it
        err.headers = headers
        err.method = None if start[:4].upper() == "SIP/" else start.partition(" ")[0]
        raise
    return message


def _empty_line(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """Where the header section ends: the span of the first ``CRLF CRLF``, bare LFs tolerated
    (the first match of ``\\r?\\n\\r?\\n``), or None. Plain searches: a regex scan costs more
    than the rest of reading a short message's head."""
    crlf = data.find(b"\n\r\n", start)
    lf = data.find(b"\n\n", start, len(data) if crlf < 0 else crlf + 1)
    at = crlf if lf < 0 else lf
    if at < 0:
        return None
    return (at - 1 if at > start and data[at - 1] == 13 else at), at + (3 if lf < 0 else 2)


def _content_length(message: Request | Response) -> int | None:
    """§20.14; several values cannot frame anything (RFC 4475 §3.3.9)."""
    values = message.headers._index.get("content-length", ())
    if len(values) > 1:
        raise ParseError(400, "Multiple Content-Length values")
    return _integer(values[0], "Content-Length", 2**32 - 1) if values else None


def _validate(message: Request | Response) -> None:
    """The stateless checks of §8.2.1–§8.2.2 / §16.3 step 1; each raises a ParseError naming
    the problem. The Request-URI scheme comes last: 416 only for otherwise good requests."""
    headers = message.headers
    index = headers._index
    if not index.keys() >= _REQUIRED_KEYS:
        missing = [name for name in _REQUIRED if name not in headers]
        raise ParseError(400, f"Missing {', '.join(missing)} header field"
                         + ("s" if len(missing) > 1 else ""))  # RFC 4475 §3.3.1
    repeated = [name for name in _SINGLE if len(index.get(name.lower(), ())) > 1]
    if repeated:
        raise ParseError(400, f"Multiple {', '.join(repeated)} values")  # RFC 4475 §3.3.8
    if not _CALL_ID_RE.fullmatch(index["call-id"][0]):
        raise ParseError(400, "Bad Call-ID header field")
    # Each value read as its typed accessor reads it, errors and all, without building objects.
    _, method = _typed("CSeq", _read_cseq, index["cseq"][0])
    _typed("From", _read_name_addr, index["from"][0])
    _typed("To", _read_name_addr, index["to"][0])
    for value in index["via"]:
        _typed("Via", _read_via, value)
    contacts = index.get("contact", ())
    if "*" in contacts:
        message.contacts  # Contact: * (§10.2.2), refused unless alone
    else:
        for value in contacts:
            _typed("Contact", _read_name_addr, value)
    message.max_forwards  # 0..255
    if isinstance(message, Response):
        return
    if method != message.method:  # RFC 4475 §3.1.2.17; 501 for unknowns: §3.1.2.18
        raise ParseError(400 if message.method in _KNOWN_METHODS else 501,
                         "CSeq method does not match the request method")
    if message.uri.partition(":")[0].lower() not in ("sip", "sips"):
        raise ParseError(416, "Unsupported URI Scheme")  # RFC 4475 §3.3.2, §3.3.3
    try:
        *_, uri_headers = _read_sip_uri(message.uri)
    except ParseError:
        raise ParseError(400, "Malformed Request-URI") from None
    if uri_headers:
        raise ParseError(400, "Headers are not allowed in the Request-URI")  # §19.1.5; §3.1.2.11


def parse_datagram(data: bytes, *, max_line_size: int = MAX_LINE_SIZE
                   ) -> Request | Response | KeepAlive:
    """One message from one UDP datagram (§18.3): octets beyond Content-Length are discarded
    (RFC 4475 §3.1.1.8); a Content-Length beyond the datagram is an error (§3.1.2.2); without
    Content-Length the body runs to the end. Leading CRLFs are skipped (§7.5). The datagram's end
    also ends a header section that lacks its empty line (as RFC 4475's own baddn.dat does)."""
    data = data.lstrip(b"\r\n")
    if not data:
        return KeepAlive()
    end = _empty_line(data)
    head, body = (data[:end[0]], data[end[1]:]) if end else (data.rstrip(b"\r\n"), b"")
    message = _parse_head(head, max_line_size)
    try:
        length = _content_length(message)
        if length is not None:
            if length > len(body):
                raise ParseError(400, "Content-Length larger than the datagram")
            body = body[:length]
        message.body = body
        _validate(message)
    except ParseError as err:
        message._about(err)
        raise
    return message


class StreamParser:
    """Frames messages on a byte stream (TCP, TLS) by Content-Length, required there (§18.3).

    ``feed()`` bytes as they arrive; ``next_message()`` (or iterating) gives a :class:`Request`,
    :class:`Response` or :class:`KeepAlive`, or None until more bytes are needed. A lone CRLF
    before a message is skipped (§7.5, a keep-alive "pong"); a double CRLF is a :class:`KeepAlive`
    "ping" (RFC 5626 §4.4.1). Errors found after framing cost only that message; framing errors
    are ``fatal``, and raised again by every later call.
    """

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE,
                 max_line_size: int = MAX_LINE_SIZE):
        self.max_message_size, self.max_line_size = max_message_size, max_line_size
        self._buffer = bytearray()
        self._scanned = 0  # bytes searched for the end of the header section so far
        self._pending: tuple[Request | Response, int, int] | None = None  # head, body start, length
        self._error: ParseError | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished message are waiting (keep-alive CRLFs aside): a peer that
        stops here has sent a truncated message (RFC 3261 §18.3). Asked after every read, so it
        looks at the first bytes only: what reading left that is no (partial) CRLF keep-alive
        is a message begun, or junk that never becomes one."""
        buffer = self._buffer
        return bool(buffer) and not b"\r\n\r\n".startswith(buffer)

    def __iter__(self) -> Iterator[Request | Response | KeepAlive]:
        while (event := self.next_message()) is not None:
            yield event

    def next_message(self) -> Request | Response | KeepAlive | None:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ParseError as err:
            if err.fatal:
                self._error = err
            raise

    def _next(self) -> Request | Response | KeepAlive | None:
        buffer = self._buffer
        if self._pending is None:
            while buffer.startswith(b"\r\n"):
                if buffer.startswith(b"\r\n\r\n"):
                    del buffer[:4]
                    return KeepAlive()
                if b"\r\n\r\n".startswith(buffer):  # maybe the start of a ping
                    return None
                del buffer[:2]
            try:
                self._pending = self._frame()
            except ParseError as err:
                err.fatal = True
                raise
            if self._pending is None:
                return None
        message, start, length = self._pending
        if len(buffer) < start + length:
            return None
        message.body = bytes(buffer[start:start + length])
        del buffer[:start + length]
        self._pending, self._scanned = None, 0
        try:
            _validate(message)
        except ParseError as err:
            message._about(err)
            raise
        return message

    def _frame(self) -> tuple[Request | Response, int, int] | None:
        """Parse the header section once it is complete; the body length it announces."""
        span = _empty_line(self._buffer, max(0, self._scanned - 3))
        if span is None:
            self._scanned = len(self._buffer)
            if self._scanned > self.max_message_size:
                raise ParseError(513, "Header section too large")
            return None
        head_end, body_start = span
        if body_start > self.max_message_size:
            raise ParseError(513, "Header section too large")
        message = _parse_head(bytes(self._buffer[:head_end]), self.max_line_size)
        try:
            length = _content_length(message)
            if length is None:
                raise ParseError(400, "Missing Content-Length header field (required on streams)")
            if body_start + length > self.max_message_size:
                raise ParseError(413, "Message body too large")
        except ParseError as err:
            message._about(err)
            raise
        return message, body_start, length
