"""Server-to-server XML streams (RFC 6120 §4-§6, §8 and §13.7 for servers) as sans-IO state
machines: bytes in, bytes out. No gevent, socket or ssl imports; the transport
(``s2s_transport.py``) owns the sockets and hands each stream a ``link`` (a
:class:`convergence.connection.Connection`: ``send``, ``start_tls``, ``close_after_flush``,
``closed``) and a ``federation``: the per-core object that keeps the streams, queues and pending
dialback checks (``domain``, ``settings``, ``secret``, ``server_tls``, ``client_tls``,
``now()``, and the callbacks named below).

**Inbound** (:class:`InboundStream`, a peer connected to us, we are the *receiving server*):

1. header (§4.7): content namespace ``jabber:server`` (else ``invalid-namespace``), version 1.x
   (else ``unsupported-version``), ``to`` one of our domains (else ``host-unknown``, §4.9.3.6), a
   ``from`` that is a domain name (else ``invalid-from``, §4.9.3.9);
2. features (§4.3.2): ``<starttls><required/></starttls>`` until TLS is up when
   ``s2s_require_encryption`` (anything else before is a ``policy-violation``), then the dialback
   feature (XEP-0220 §2.4.1), and SASL EXTERNAL (XEP-0178 §3) when the peer's TLS client
   certificate validates for the header's ``from`` (``federation.certificate_ok``; the transport
   asks peers for a certificate only with ``s2s_secure_auth``: Python's ssl cannot ask without
   failing the handshake of a self-signed peer, see docs/xmpp.md). ``<auth mechanism='EXTERNAL'>``
   with that domain (or ``=``) succeeds, authenticates it on this stream, and a new stream
   follows (RFC 6120 §6.4.6); anything else is a SASL ``<failure/>`` (the peer may use dialback);
3. ``<db:result>`` (XEP-0220 §2.1.1): the key is checked with the originating domain's
   authoritative server (``federation.verify_dialback(stream, domain, key)``, which answers later
   with :meth:`InboundStream.dialback_result`); a valid key authenticates that (from, to) pair on
   this stream (several domains may be authenticated on one stream, §2.4 multiplexing);
4. ``<db:verify>`` (XEP-0220 §2.2): we are the authoritative server: ``type='valid'`` if the key
   is the one XEP-0185 gives for (receiving, us, stream id), else ``invalid``. No authentication
   is needed for it;
5. stanzas (§8): only in ``jabber:server``; ``to`` of our domain (else ``host-unknown``),
   ``from`` of an authenticated domain (before any authentication ``not-authorized``, §4.9.3.12;
   after, another domain is ``invalid-from``, §4.9.3.9), then ``federation.inbound(stream,
   element)`` with the element renamed to ``jabber:client`` (the namespace the rest of the plugin
   works in).

**Outbound** (:class:`OutboundStream`, we connect to a peer: the *originating server*): header →
features → STARTTLS (refused if ``s2s_require_encryption`` and the peer offers none) → restart →
SASL EXTERNAL (XEP-0178) when offered (the peer trusts our certificate), falling back to dialback
(``<db:result>`` with our XEP-0185 key) when EXTERNAL fails or is not offered → ``ready``. With
``s2s_secure_auth`` the peer's certificate must validate for its domain
(``federation.certificate_ok(link, domain)``), else the stream fails. Once TLS is up (before
authentication, XEP-0220 §2.1.2) the stream carries our ``<db:verify>`` questions; their answers
go to ``federation.verify_answer``. ``federation.outbound_usable``/``outbound_ready``/
``stream_ended`` tell the federation where the stream is.

A stanza handed to an outbound stream must never be lost silently ("acknowledged means never
lost", as for c2s in ``c2s.py``): the stream remembers, for each stanza, the link's ``accepted``
offset where it ends, and once the link has closed (the peer vanished, stopped reading, reset the
connection, or the stream was closed) every stanza that ends beyond what the socket took
(``written``) goes back to the federation (``federation.returned(stream, [(element, bounce)])``),
which sends it on the domain's next stream or bounces it to its sender. Bytes the kernel took can
still be lost with the connection: the peer acknowledges nothing (Prosody's mod_s2s does not offer
XEP-0198 on server streams by default), see docs/xmpp.md "Federation".

Both sides: stream errors are preceded by our header if none was sent (§4.9.1.2); whitespace
keep-alives after ``s2s_keepalive`` silent seconds (§4.6.1); an authenticated stream idle (no
stanza either way) for ``s2s_idle_timeout`` seconds is closed cleanly (§4.4); negotiation must end
within ``negotiation_timeout``.
"""
from __future__ import annotations

import base64
import logging
import secrets
import xml.etree.ElementTree as ET
from collections import deque

from convergence import Address, AddressError
from convergence.addresses import normalize_domain

from . import dialback
from .stream import (CLIENT_NS, SERVER_NS, STREAM_CLOSE, STREAM_NS, EventStream, StreamParser,
                     serialize, stream_error, stream_header)

log = logging.getLogger(__name__)

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
DB = "{" + dialback.DIALBACK_NS + "}"
STARTTLS, PROCEED = f"{{{TLS_NS}}}starttls", f"{{{TLS_NS}}}proceed"
TLS_FAILURE = serialize(ET.Element(f"{{{TLS_NS}}}failure"), SERVER_NS) + STREAM_CLOSE
FEATURES = f"{{{STREAM_NS}}}features"
STREAM_ERROR = f"{{{STREAM_NS}}}error"
STANZAS = ("message", "presence", "iq")
MAX_PENDING = 16  # dialback checks one inbound stream may have outstanding


def header(from_: str, to: str | None, id: str | None) -> bytes:
    """A ``jabber:server`` stream header declaring the dialback prefix (XEP-0220 §2.1.1)."""
    head = stream_header(from_, to, id, ns=SERVER_NS)
    return head[:-1] + f" xmlns:db='{dialback.DIALBACK_NS}'>".encode()


def renamed(element: ET.Element, old: str, new: str) -> ET.Element:
    """``element`` (changed in place) with every name in namespace ``old`` moved to ``new``:
    stanzas travel in ``jabber:server`` between servers and in ``jabber:client`` inside the
    plugin (RFC 6120 §4.8.3)."""
    prefix, replacement = "{" + old + "}", "{" + new + "}"
    for node in element.iter():
        if node.tag.startswith(prefix):
            node.tag = replacement + node.tag[len(prefix):]
    return element


def domain_of(text: str | None) -> str | None:
    """The normalized domain ``text`` names, or None when it is not a domain name."""
    if not text or "@" in text or "/" in text:
        return None
    try:
        return normalize_domain(text)
    except AddressError:
        return None


def jid_domain(text: str | None) -> str | None:
    """The domain of the JID ``text``, or None if it is missing or malformed."""
    if not text:
        return None
    try:
        return Address.from_jid(text).domain
    except AddressError:
        return None


class S2SStream(EventStream):
    """What inbound and outbound streams share: the parser (``EventStream`` reads), restarts,
    output, timers, the close."""

    direction = ""

    def __init__(self, federation, link, peer):
        self.federation = federation
        self.link = link
        self.peer = peer
        settings = federation.settings
        self.parser = StreamParser(settings["max_stanza_size"])
        self.encrypted = False
        self.closed = False
        self.header_sent = False
        self.generation = 0
        self.stream_id: str | None = None
        self.deadline = federation.now() + settings["negotiation_timeout"]
        self.last_stanza = federation.now()
        self.reason = ""  # why it ended

    def __repr__(self):
        return f"<{type(self).__name__} {self.peer} {self.stream_id}>"

    @property
    def settings(self):
        return self.federation.settings

    # ---- input (EventStream.receive) ----
    def _element(self, element: ET.Element) -> None:
        """A stream error from the peer ends the stream (RFC 6120 §4.9); anything else is the
        direction's business (``_received``)."""
        if element.tag == STREAM_ERROR:
            condition = next((c.tag.rpartition("}")[2] for c in element
                              if c.tag.rpartition("}")[2] != "text"), "undefined-condition")
            return self._end(f"stream error from the peer: {condition}")
        self._received(element)

    def _check_header(self, attrs: dict) -> bool:
        """RFC 6120 §4.7, §4.8: namespace and version; False once it closed the stream."""
        if attrs.get("xmlns") != SERVER_NS:
            self.close("invalid-namespace", "a server stream's content namespace is jabber:server")
            return False
        if attrs.get("version", "0").partition(".")[0] != "1":
            self.close("unsupported-version", "this server speaks XMPP version 1.0")
            return False
        return True

    def _restart(self) -> None:
        """A new stream after STARTTLS (§5.4.3.3) or SASL (§6.4.6)."""
        self.parser.reset()
        self.generation += 1
        self.header_sent = False

    # ---- output ----
    def send(self, element: ET.Element) -> bool:
        if self.closed:
            return False
        return self.link.send(serialize(element, SERVER_NS))

    def send_stanza(self, element: ET.Element) -> bool:
        """A stanza from the plugin (``jabber:client`` names) onto this stream."""
        self.last_stanza = self.federation.now()
        return self.send(renamed(element, CLIENT_NS, SERVER_NS))

    # ---- timers ----
    def idle_timeout(self) -> float:
        """Seconds of the peer's silence before ``idle()``."""
        if not self.authenticated_any():
            return max(0.01, self.deadline - self.federation.now())
        left = self.last_stanza + self.settings["s2s_idle_timeout"] - self.federation.now()
        return max(0.01, min(self.settings["s2s_keepalive"], left))

    def idle(self) -> None:
        """Negotiation too slow: ``connection-timeout``; no stanza for ``s2s_idle_timeout``:
        a clean close; else a whitespace keep-alive (§4.6.1)."""
        if not self.authenticated_any():
            return self.close("connection-timeout", "negotiation took too long")
        if self.federation.now() - self.last_stanza >= self.settings["s2s_idle_timeout"]:
            return self.close()
        self.link.send(b" ")

    def authenticated_any(self) -> bool:
        raise NotImplementedError

    # ---- the end ----
    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream: a stream error (§4.9) if ``condition``, else cleanly (§4.4)."""
        if self.closed:
            return
        if not self.header_sent:
            self._send_header()
        self.link.send(stream_error(condition, text) if condition else STREAM_CLOSE)
        self._end(f"{condition}: {text}" if condition and text else condition or "stream closed")

    def _end(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.reason = self.reason or reason
            self.link.close_after_flush(reason)
            self.federation.stream_ended(self, reason)

    def connection_lost(self) -> None:
        """The transport's connection closed (either side)."""
        self._end(self.link.close_reason or "connection lost")

    def _send_header(self, to: str | None = None) -> None:
        raise NotImplementedError

    def _open(self, attrs: dict) -> None:
        raise NotImplementedError

    def _received(self, element: ET.Element) -> None:
        raise NotImplementedError


class InboundStream(S2SStream):
    """A stream a peer opened to us (we are the receiving or authoritative server)."""

    direction = "in"

    def __init__(self, federation, link, peer, encrypted: bool = False):
        super().__init__(federation, link, peer)
        self.encrypted = encrypted
        self.remote: str | None = None  # the header's 'from'
        self.authenticated: set[str] = set()  # remote domains allowed to send on this stream
        self.pending: set[str] = set()  # domains whose dialback key is being checked

    def authenticated_any(self) -> bool:
        return bool(self.authenticated)

    def _send_header(self, to: str | None = None) -> None:
        self.header_sent = True
        if self.stream_id is None:
            self.stream_id = secrets.token_hex(16)
        self.link.send(header(self.federation.domain, to, self.stream_id))

    def _open(self, attrs: dict) -> None:
        self.stream_id = secrets.token_hex(16)  # a new id for each stream (§4.7.3), keys bind it
        self._send_header(attrs.get("from"))
        if not self._check_header(attrs):
            return
        if domain_of(attrs.get("to")) != self.federation.domain:
            return self.close("host-unknown", f"this server serves {self.federation.domain}")
        if attrs.get("from") is not None:
            self.remote = domain_of(attrs["from"])
            if self.remote is None:
                return self.close("invalid-from", "'from' is not a domain name")
        self.send(self._features())

    def _tls_missing(self) -> bool:
        return self.settings["s2s_require_encryption"] and not self.encrypted

    def _features(self) -> ET.Element:
        features = ET.Element(FEATURES)
        if not self.encrypted and self.federation.server_tls is not None:
            starttls = ET.SubElement(features, STARTTLS)
            if self.settings["s2s_require_encryption"]:
                ET.SubElement(starttls, f"{{{TLS_NS}}}required")
        if not self._tls_missing():
            if self._external_possible():
                mechanisms = ET.SubElement(features, f"{{{SASL_NS}}}mechanisms")
                ET.SubElement(mechanisms, f"{{{SASL_NS}}}mechanism").text = "EXTERNAL"
            ET.SubElement(features, f"{{{dialback.FEATURE_NS}}}dialback")
        return features

    def _external_possible(self) -> bool:
        """XEP-0178: the peer's certificate validates for the domain it says it is."""
        return (self.encrypted and self.remote is not None and not self.authenticated
                and self.federation.certificate_ok(self.link, self.remote))

    def _sasl(self, element: ET.Element) -> None:
        """XEP-0178 §3: EXTERNAL with our peer's domain (or none: the header's ``from``)."""
        failure = ET.Element(f"{{{SASL_NS}}}failure")
        if element.tag != f"{{{SASL_NS}}}auth" or element.get("mechanism") != "EXTERNAL" \
                or not self._external_possible():
            ET.SubElement(failure, f"{{{SASL_NS}}}invalid-mechanism")
            return self.send(failure)
        text = (element.text or "").strip()
        try:
            domain = self.remote if text in ("", "=") else domain_of(
                base64.b64decode(text, validate=True).decode())
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            domain = None
        if domain != self.remote:
            ET.SubElement(failure, f"{{{SASL_NS}}}not-authorized")
            return self.send(failure)
        self.authenticated.add(domain)
        self.last_stanza = self.federation.now()
        log.info("s2s: %s authenticated by SASL EXTERNAL (inbound from %s)", domain, self.peer)
        self.send(ET.Element(f"{{{SASL_NS}}}success"))
        self._restart()

    def _received(self, element: ET.Element) -> None:
        name = element.tag
        if name == STARTTLS:
            return self._starttls()
        if self._tls_missing():
            return self.close("policy-violation", "STARTTLS is required (s2s_require_encryption)")
        if name == DB + "result":
            return self._dialback_result(element)
        if name == DB + "verify":
            return self._dialback_verify(element)
        if name.startswith("{" + SASL_NS + "}"):
            return self._sasl(element)
        uri, _, local = name[1:].partition("}")
        if uri != SERVER_NS or local not in STANZAS:
            return self.close("unsupported-stanza-type", f"{name} is not a server stanza")
        self._stanza(element)

    def _starttls(self) -> None:
        """RFC 6120 §5.4.2: <proceed/>, TLS, a new stream; <failure/> when not possible."""
        if self.encrypted or self.federation.server_tls is None:
            self.link.send(TLS_FAILURE)
            return self._end("STARTTLS refused")
        self.send(ET.Element(PROCEED))
        self._restart()
        self.link.start_tls(self.federation.server_tls)  # raises OSError when the handshake fails
        self.encrypted = True

    def _dialback_result(self, element: ET.Element) -> None:
        """XEP-0220 §2.1.1-§2.1.3: a key from the originating server, checked with its
        authoritative server (the answer comes to :meth:`dialback_result`)."""
        if element.get("type") is not None:
            return  # only a receiving server sends results with a type
        if domain_of(element.get("to")) != self.federation.domain:
            return self.close("host-unknown", f"this server serves {self.federation.domain}")
        originating = domain_of(element.get("from"))
        if originating is None or (self.remote is not None and originating != self.remote
                                   and not self.authenticated):
            return self.close("invalid-from", "'from' is not the domain this stream came from")
        if originating == self.federation.domain:
            return self.close("invalid-from", "that is our own domain")
        if originating in self.authenticated:
            return self._answer_result(originating, True)
        if originating in self.pending:
            return
        if len(self.pending) >= MAX_PENDING:
            return self.close("policy-violation", "too many dialback checks at once")
        self.pending.add(originating)
        self.federation.verify_dialback(self, originating, (element.text or "").strip())

    def dialback_result(self, originating: str, valid: bool) -> None:
        """The authoritative server's answer (or None on failure to ask it): tell the peer
        (XEP-0220 §2.1.3); a wrong key ends the stream with ``not-authorized``."""
        if self.closed or originating not in self.pending:
            return
        self.pending.discard(originating)
        if valid:
            self.authenticated.add(originating)
            self.last_stanza = self.federation.now()
            log.info("s2s: %s authenticated by dialback (inbound from %s)", originating, self.peer)
        self._answer_result(originating, valid)
        if not valid:
            self.close("not-authorized", "dialback key refused by the authoritative server")

    def _answer_result(self, originating: str, valid: bool) -> None:
        self.send(ET.Element(DB + "result", {"from": self.federation.domain, "to": originating,
                                             "type": "valid" if valid else "invalid"}))

    def _dialback_verify(self, element: ET.Element) -> None:
        """XEP-0220 §2.2: answer as the authoritative server for our domain."""
        if element.get("type") is not None:
            return
        if domain_of(element.get("to")) != self.federation.domain:
            return self.close("host-unknown", f"this server serves {self.federation.domain}")
        receiving = domain_of(element.get("from"))
        if receiving is None:
            return self.close("invalid-from", "'from' is not a domain name")
        stream_id = element.get("id") or ""
        valid = dialback.valid(self.federation.secret, receiving, self.federation.domain,
                               stream_id, element.text or "")
        self.send(ET.Element(DB + "verify", {"from": self.federation.domain, "to": receiving,
                                             "id": stream_id, "type": "valid" if valid else "invalid"}))

    def _stanza(self, element: ET.Element) -> None:
        """RFC 6120 §8.1.1.1, §8.1.2.1, §13.7: addresses checked against what was authenticated."""
        if not self.authenticated:
            return self.close("not-authorized", "authenticate (dialback) before sending stanzas")
        if jid_domain(element.get("from")) not in self.authenticated:
            return self.close("invalid-from", "'from' is not a domain authenticated on this stream")
        if jid_domain(element.get("to")) != self.federation.domain:
            return self.close("host-unknown", f"this server serves {self.federation.domain}")
        self.last_stanza = self.federation.now()
        self.federation.inbound(self, renamed(element, SERVER_NS, CLIENT_NS))


class OutboundStream(S2SStream):
    """A stream we opened to ``remote`` (we are the originating server)."""

    direction = "out"

    def __init__(self, federation, link, peer, remote: str):
        super().__init__(federation, link, peer)
        self.remote = remote
        self.ready = False  # authenticated: stanzas may go
        self.usable = False  # TLS up (or not required): dialback questions may go
        self.sasl_done = False
        self.tried_external = False
        self.dialback_offered = False
        self.unwritten: deque = deque()  # (link offset where its stanza ends, element, bounce)

    def authenticated_any(self) -> bool:
        return self.ready

    def send_stanza(self, element: ET.Element, bounce=None) -> bool:
        """A stanza onto this stream, remembered until the socket has taken it; False (and the
        element keeps its ``jabber:client`` names) when the link is closed or its queue full."""
        if not super().send_stanza(element):
            renamed(element, SERVER_NS, CLIENT_NS)
            return False
        written, unwritten = self.link.written, self.unwritten
        while unwritten and unwritten[0][0] <= written:
            unwritten.popleft()
        unwritten.append((self.link.accepted, element, bounce))
        return True

    def connection_lost(self) -> None:
        """Once the link has closed, the stanzas the socket did not take whole go back to the
        federation, oldest first."""
        super().connection_lost()
        if self.link.closed and self.unwritten:
            written, unwritten = self.link.written, self.unwritten
            self.unwritten = deque()
            back = [(renamed(element, SERVER_NS, CLIENT_NS), bounce)
                    for end, element, bounce in unwritten if end > written]
            if back:
                self.federation.returned(self, back)

    def start(self) -> None:
        """Send our header (§4.7.1)."""
        self._send_header()

    def _send_header(self, to: str | None = None) -> None:
        self.header_sent = True
        self.link.send(header(self.federation.domain, self.remote, None))

    def _open(self, attrs: dict) -> None:
        if not self._check_header(attrs):
            return
        self.stream_id = attrs.get("id")
        if not self.stream_id:
            return self.close("invalid-xml", "the receiving server's header needs an 'id'")

    def _received(self, element: ET.Element) -> None:
        name = element.tag
        if name == FEATURES:
            return self._features(element)
        if name == PROCEED:
            return self._starttls()
        if name == f"{{{TLS_NS}}}failure":
            return self._end("the peer refused STARTTLS")
        if name == f"{{{SASL_NS}}}success":
            return self._sasl_success()
        if name == f"{{{SASL_NS}}}failure":
            return self._dialback() if self.dialback_offered else self.close(
                "not-authorized", "SASL EXTERNAL failed and dialback is not offered")
        if name == DB + "result":
            return self._result(element)
        if name == DB + "verify":
            return self._verify_answer(element)
        # Anything else on our outbound stream (stanzas over a one-way stream) is ignored.

    def _features(self, features: ET.Element) -> None:
        settings = self.settings
        if self.sasl_done:
            return self._ready()
        if not self.encrypted:
            if features.find(STARTTLS) is not None and self.federation.client_tls is not None:
                return self.send(ET.Element(STARTTLS))
            if settings["s2s_require_encryption"]:
                return self.close("policy-violation", "this server requires STARTTLS for federation")
        if not self.usable:
            self.usable = True
            self.federation.outbound_usable(self)
            if self.closed:
                return
        self.dialback_offered = features.find(f"{{{dialback.FEATURE_NS}}}dialback") is not None
        mechanisms = [m.text for m in features.iterfind(f"{{{SASL_NS}}}mechanisms/{{{SASL_NS}}}mechanism")]
        if "EXTERNAL" in mechanisms and self.encrypted and not self.tried_external:
            self.tried_external = True
            auth = ET.Element(f"{{{SASL_NS}}}auth", mechanism="EXTERNAL")
            auth.text = base64.b64encode(self.federation.domain.encode()).decode()
            return self.send(auth)
        self._dialback()

    def _starttls(self) -> None:
        self._restart()
        self.link.start_tls(self.federation.client_tls, server_side=False, server_hostname=self.remote)
        self.encrypted = True
        if self.settings["s2s_secure_auth"] and not self.federation.certificate_ok(self.link, self.remote):
            return self.close("policy-violation", f"the certificate of {self.remote} does not validate "
                                                  "(s2s_secure_auth)")
        self._send_header()

    def _sasl_success(self) -> None:
        """XEP-0178 §3: authenticated by our certificate; a new stream follows (RFC 6120 §6.4.6)."""
        if not self.tried_external:
            return self.close("policy-violation", "unexpected SASL success")
        self.sasl_done = True
        log.info("s2s: authenticated to %s by SASL EXTERNAL", self.remote)
        self._restart()
        self._send_header()

    def _dialback(self) -> None:
        """XEP-0220 §2.1.1: our key for this stream."""
        if self.settings["s2s_secure_auth"] and not self.federation.certificate_ok(self.link, self.remote):
            return self.close("policy-violation", "s2s_secure_auth: dialback alone is not enough")
        result = ET.Element(DB + "result", {"from": self.federation.domain, "to": self.remote})
        result.text = dialback.key(self.federation.secret, self.remote, self.federation.domain,
                                   self.stream_id)
        self.send(result)

    def _result(self, element: ET.Element) -> None:
        if domain_of(element.get("from")) != self.remote:
            return
        if element.get("type") == "valid":
            log.info("s2s: authenticated to %s by dialback", self.remote)
            return self._ready()
        self.reason = f"{self.remote} refused our dialback key ({element.get('type')})"
        self.close()

    def _verify_answer(self, element: ET.Element) -> None:
        kind = element.get("type")
        if kind not in ("valid", "invalid"):
            return
        self.federation.verify_answer(self, domain_of(element.get("from")), element.get("id") or "",
                                      kind == "valid")

    def _ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.last_stanza = self.federation.now()
            self.federation.outbound_ready(self)

