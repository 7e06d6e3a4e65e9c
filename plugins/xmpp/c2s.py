"""One client-to-server session (RFC 6120) as a sans-IO state machine: bytes in, bytes out.

Rules of this file: no gevent, socket or ssl imports. The transport feeds ``receive(bytes)`` and
``idle()``, and ``connection_lost()`` once the connection has closed; the session writes through
its ``link`` (``send(bytes) -> bool``, ``flush(timeout) -> bool``, ``start_tls(context)``,
``close_after_flush(reason)``, and ``closed``, ``accepted`` and ``written``: see
:class:`convergence.connection.Connection`) and calls the core. A test drives it with a link that
records bytes, so every stage reads as a transcript.

Stages (RFC 6120 §9.1): stream header → features → STARTTLS (§5, required unless
``require_tls = false``) → restart → SASL (§6) → restart → resource binding (§7) → stanzas (§8).
Before binding only negotiation elements are accepted; anything else is a ``not-authorized``
stream error. After binding every stanza gets ``from`` = the session's full JID (§8.1.2.1, a
spoofed one is replaced) and goes to the service's IQ router (``service.iq``),
``messages.outbound`` or ``presence.outbound``. Stream errors (§4.9) are preceded by our header when none was sent yet
(§4.9.1.2) and end the stream.

Failed SASL attempts count per source address (``[xmpp] login_failures`` per
``login_failure_window`` seconds). RFC 6120 §6.4.5: a client that exceeds the retries gets a stream
error, ``policy-violation``; so does any new ``<auth/>`` from a blocked address, before its
credentials are even looked at.

After binding the session is a core endpoint (``address``, ``protocol``, ``presence``, ``deliver``)
registered with ``core.presence.login``; when it ends for any reason, ``presence.closed`` runs
first, then ``core.presence.logout``.

A message the session took (``deliver``) is answered as delivered, so it must not be lost when the
connection closes before writing it (issue 11): a client that stops reading is disconnected once
``[xmpp] max_queued`` bytes wait for it, a dead peer by a write failure or timeout, and the queue
goes with the connection. The session remembers, for each message it took, the link's ``accepted``
offset where its stanza ends; once the link has closed, every message that ends beyond what the
socket took (``written``) goes back to the router (``Router.returned``), which stores it for the
next login, oldest first. The message whose ``send`` found the link closed (the one that
overflowed the queue, say) is refused after those went back, so the router stores it after them.
Bytes the kernel took can still be lost with the connection, and a message to the bare JID that
another resource also received is stored again: see docs/xmpp.md, "Slow readers".

With stream management (XEP-0198, ``stream_management.py``) a message counts as delivered only
once the client acknowledged it: ``send`` keeps each stanza (with its message) until then, a dead
connection of a resumable session hibernates instead of ending it (``connection_lost``), a new
stream may take the session over with ``<resume/>`` (every slot but ``CONNECTION_STATE`` moves to
it), and a session that ends for good gives its unacknowledged messages back (``_give_back``).
While the client is inactive (XEP-0352, ``csi.py``) ``send`` holds presence and chat states back.
"""
from __future__ import annotations

import base64
import binascii
import logging
import secrets
import unicodedata
import xml.etree.ElementTree as ET
from collections import deque

from convergence import Address, AddressError, RoutingError
from convergence.addresses import normalize_domain
from convergence.presence import UNAVAILABLE

from . import csi, messages, presence, sasl, stream_management
from .stanzas import StanzaError, error_reply, iq_result, tag
from .stream import (CLIENT_NS, STREAM_CLOSE, STREAM_NS, EventStream, StreamParser, as_bytes, serialize,
                     stream_error, stream_header)

log = logging.getLogger(__name__)

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
PING_NS = "urn:xmpp:ping"
ROSTER_VERSIONING_NS = "urn:xmpp:features:rosterver"
REGISTER_FEATURE_NS = "http://jabber.org/features/iq-register"

STARTTLS = tag("starttls", TLS_NS)
PROCEED = serialize(ET.Element(tag("proceed", TLS_NS)))
TLS_FAILURE = serialize(ET.Element(tag("failure", TLS_NS))) + STREAM_CLOSE  # §5.4.2.2
IQ, MESSAGE, PRESENCE = tag("iq"), tag("message"), tag("presence")
BIND = tag("bind", BIND_NS)
SASL_COUNTED = ("not-authorized", "invalid-authzid")  # failures that count as a wrong guess


def _b64(data: bytes) -> str:
    """RFC 6120 §6.4.2: empty data is written as '='."""
    return base64.b64encode(data).decode() if data else "="


def resourcepart(text: str) -> str:
    """RFC 7622 §3.4 (OpaqueString, simplified): NFC, 1 to 1023 bytes, no control characters."""
    resource = unicodedata.normalize("NFC", text)
    if not resource or len(resource.encode()) > 1023 or any(
            unicodedata.category(ch) in ("Cc", "Cs") for ch in resource):
        raise AddressError("a resource is 1 to 1023 bytes without control characters")
    return resource


def register_iq(router) -> None:
    router.register(tag("session", SESSION_NS), legacy_session)


def legacy_session(service, session, stanza):
    """RFC 3921 §3 session establishment, a no-op kept for old clients (RFC 6121 Appendix E)."""
    return iq_result(stanza)


class Session(EventStream):
    """A client's stream, from the first byte to the close; an Endpoint once bound."""

    __slots__ = ("service", "link", "peer", "parser", "encrypted", "username", "address", "account",
                 "presence", "available", "interested", "directed", "carbons", "closed",
                 "header_sent", "stream_open", "lang", "generation", "mechanism", "deadline",
                 "pinged", "unwritten", "holding", "giving", "sm", "csi", "moving", "__weakref__")
    #: what belongs to the connection, not to the bound session: a stream resumed on a new
    #: connection (XEP-0198 §5) takes every other slot over from the old one
    CONNECTION_STATE = frozenset(("service", "link", "peer", "parser", "encrypted", "closed",
                                  "header_sent", "stream_open", "lang", "generation", "mechanism",
                                  "deadline", "pinged", "unwritten", "holding", "giving",
                                  "moving", "__weakref__"))

    protocol = "xmpp"

    def __init__(self, service, link, peer, encrypted: bool = False):
        self.service = service
        self.link = link
        self.peer = peer  # (host, port) the connection came from
        self.parser = StreamParser(service.settings["max_stanza_size"])
        self.encrypted = encrypted  # TLS is up (after STARTTLS, or Direct TLS from the start)
        self.username: str | None = None  # the authenticated localpart
        self.address: Address | None = None  # the full JID once bound
        self.account: Address | None = None
        self.presence = UNAVAILABLE  # until initial presence (xmpp-roster's presence.py sets it)
        self.available = False  # sent initial available presence (RFC 6121 §4.2)
        self.interested = False  # requested the roster (RFC 6121 §2.1.6)
        self.directed: set[Address] = set()  # directed-presence targets (RFC 6121 §4.6)
        self.carbons = False  # XEP-0280 enabled
        self.closed = False
        self.header_sent = False  # our header for the current stream
        self.stream_open = False  # the client's header for the current stream
        self.lang = "en"
        self.generation = 0  # bumped at each stream restart: events of the old stream are dropped
        self.mechanism = None  # the SASL server of an exchange in progress
        self.deadline = service.now() + service.settings["negotiation_timeout"]
        self.pinged = False  # a keep-alive ping is out and unanswered (XEP-0199)
        self.unwritten: deque = deque()  # (link offset where its stanza ends, Message), oldest first
        self.holding = False  # closing: the router holds the account's stores until we gave back
        self.giving = False  # a greenlet is giving back ``unwritten`` (one at a time: in order)
        self.sm = None  # XEP-0198 state once enabled (stream_management.StreamManagement)
        self.csi = None  # XEP-0352: held stanzas while the client is inactive (csi.ClientState)
        self.moving = None  # stanzas and messages for it while it moves to another node (sm_cluster)
        service.connected(self)

    def __repr__(self):
        return f"<Session {self.address or self.username or self.peer}>"

    # ---- input ---------------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Bytes from the client (EventStream): any answers an outstanding keep-alive ping."""
        if not self.closed:
            self.pinged = False
        super().receive(data)

    # ---- stream header and features (RFC 6120 §4.7, §4.3.2) ------------------------------------
    def _send_header(self, to: str | None = None) -> None:
        self.header_sent = True
        self.link.send(stream_header(self.service.domain, to, secrets.token_hex(8), lang=self.lang))

    def _open(self, attrs: dict) -> None:
        self.lang = attrs.get("xml:lang") or self.lang
        self._send_header(attrs.get("from"))
        self.stream_open = True
        if attrs.get("xmlns") != CLIENT_NS:
            return self.close("invalid-namespace", "the content namespace must be jabber:client")
        major, _, _ = attrs.get("version", "0").partition(".")
        if major != "1":
            return self.close("unsupported-version", "this server speaks XMPP version 1.0")
        to = attrs.get("to")
        if not to:
            return self.close("improper-addressing", "the stream header needs a 'to' (RFC 6120 §4.7.2)")
        try:
            ours = normalize_domain(to) == self.service.domain
        except AddressError:
            ours = False
        if not ours:
            return self.close("host-unknown", f"this server serves {self.service.domain}")
        self.send(self._features())

    def _features(self) -> ET.Element:
        features = ET.Element(f"{{{STREAM_NS}}}features")
        settings = self.service.settings
        tls_missing = settings["require_tls"] and not self.encrypted
        if self.username is None:
            if not self.encrypted and self.service.tls_context is not None:
                starttls = ET.SubElement(features, STARTTLS)
                if settings["require_tls"]:
                    ET.SubElement(starttls, tag("required", TLS_NS))
            if not tls_missing:
                mechanisms = ET.SubElement(features, tag("mechanisms", SASL_NS))
                for name in sasl.mechanisms(self.encrypted):
                    ET.SubElement(mechanisms, tag("mechanism", SASL_NS)).text = name
                if settings["allow_registration"]:
                    ET.SubElement(features, tag("register", REGISTER_FEATURE_NS))
        else:
            ET.SubElement(features, BIND)
            ET.SubElement(ET.SubElement(features, tag("session", SESSION_NS)), tag("optional", SESSION_NS))
            ET.SubElement(features, tag("ver", ROSTER_VERSIONING_NS))
            stream_management.features(features)
            csi.features(features)
        return features

    def _restart(self) -> None:
        """Expect a new stream header (after STARTTLS §5.4.3.3, after SASL success §6.4.6)."""
        self.parser.reset()
        self.generation += 1
        self.header_sent = self.stream_open = False

    # ---- elements by stage ---------------------------------------------------------------------
    def _element(self, element: ET.Element) -> None:
        name = element.tag
        if name == STARTTLS:
            self._starttls()
        elif name.startswith("{" + SASL_NS + "}"):
            self._sasl(element)
        elif name.startswith("{" + stream_management.SM_NS + "}") and self.username is not None:
            stream_management.element(self, element)
        elif name.startswith("{" + csi.CSI_NS + "}") and self.address is not None:
            csi.element(self, element)
        elif self.address is not None:
            self._stanza(element)
        elif name == IQ and self.username is not None and element.find(BIND) is not None:
            self._bind(element)
        elif name == IQ and self.username is None and self._before_auth(element):
            self.service.iq.dispatch(self.service, self, element)
        else:
            self.close("not-authorized", "authenticate and bind a resource first (RFC 6120 §6, §7)")

    def _before_auth(self, element: ET.Element) -> bool:
        """An IQ for a handler that works before authentication (XEP-0077 registration)."""
        if self.service.settings["require_tls"] and not self.encrypted:
            return False
        handler = self.service.iq.handler(element[0].tag) if len(element) == 1 else None
        return handler is not None and handler.before_auth

    def _starttls(self) -> None:
        """RFC 6120 §5.4.2: <proceed/>, then TLS, then a new stream; <failure/> if not possible."""
        if self.encrypted or self.username is not None or self.service.tls_context is None:
            self.link.send(TLS_FAILURE)
            return self._end("STARTTLS refused")
        self.link.send(PROCEED)
        self._restart()
        self.link.start_tls(self.service.tls_context)  # raises OSError when the handshake fails
        self.encrypted = True

    # ---- SASL (RFC 6120 §6.4) ------------------------------------------------------------------
    def _sasl(self, element: ET.Element) -> None:
        local = element.tag.rpartition("}")[2]
        if self.username is not None:
            return self.close("policy-violation", "already authenticated")
        if self.service.settings["require_tls"] and not self.encrypted:
            return self._sasl_failure("encryption-required", "use STARTTLS first")
        if local == "abort":
            self.mechanism = None
            return self._sasl_failure("aborted")
        if local == "auth":
            if self.service.limiter.blocked(self.peer[0], self.service.now()):
                return self.close("policy-violation", "too many failed logins from your address; "
                                                      "try again later")
            name = element.get("mechanism", "")
            if name not in sasl.mechanisms(self.encrypted):
                failure = "encryption-required" if name == "PLAIN" else "invalid-mechanism"
                return self._sasl_failure(failure, f"offered: {', '.join(sasl.mechanisms(self.encrypted))}")
            self.mechanism = sasl.server(name, self.service.credentials, self.service.domain,
                                         self.service.secret)
            text = (element.text or "").strip()
            if not text:
                return self._sasl_step(None)  # no initial response
        elif local == "response":
            if self.mechanism is None:
                return self._sasl_failure("malformed-request", "no authentication in progress")
            text = (element.text or "").strip()
        else:
            return self._sasl_failure("malformed-request", f"unexpected <{local}/>")
        if text == "=":
            return self._sasl_step(b"")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            self.mechanism = None
            return self._sasl_failure("incorrect-encoding", "not base64 (RFC 4648 §4)")
        self._sasl_step(data)

    def _sasl_step(self, data: bytes | None) -> None:
        step = self.mechanism.step(data)
        if isinstance(step, sasl.Challenge):
            self.link.send(b"<challenge xmlns='%s'>%s</challenge>" % (SASL_NS.encode(), _b64(step.data).encode()))
        elif isinstance(step, sasl.Success):
            self.mechanism = None
            self.username = step.username
            payload = base64.b64encode(step.data) if step.data else b""
            self.link.send(b"<success xmlns='%s'>%s</success>" % (SASL_NS.encode(), payload))
            self._restart()
        else:
            self.mechanism = None
            if step.condition in SASL_COUNTED:
                self.service.limiter.failed(self.peer[0], self.service.now())
            self._sasl_failure(step.condition, step.text)
            if self.service.limiter.blocked(self.peer[0], self.service.now()):
                self.close("policy-violation", "too many failed logins; try again later")

    def _sasl_failure(self, condition: str, text: str | None = None) -> None:
        """RFC 6120 §6.4.5, §6.5: <failure/> with the condition; the client may try again."""
        failure = ET.Element(tag("failure", SASL_NS))
        ET.SubElement(failure, tag(condition, SASL_NS))
        if text:
            ET.SubElement(failure, tag("text", SASL_NS)).text = text
        self.send(failure)

    # ---- resource binding (RFC 6120 §7) --------------------------------------------------------
    def _bind(self, element: ET.Element) -> None:
        if element.get("type") != "set":
            return self.send(error_reply(element, StanzaError("bad-request", "bind with an IQ set")))
        requested = (element.find(BIND).findtext(tag("resource", BIND_NS)) or "").strip()
        try:
            resource = resourcepart(requested) if requested else secrets.token_hex(6)
        except AddressError as exc:
            return self.send(error_reply(element, StanzaError("bad-request", str(exc))))
        account = Address(self.username, self.service.domain)
        resource = self._free_resource(account, resource)
        self.account, self.address = account, account.with_resource(resource)
        self.service.bind(self)
        result = ET.Element(BIND)
        ET.SubElement(result, tag("jid", BIND_NS)).text = self.address.jid
        self.send(iq_result(element, result))
        self.service.core.presence.login(self)  # on_login; unavailable until initial presence

    def _free_resource(self, account: Address, resource: str) -> str:
        """RFC 6120 §7.7.2.2: a taken resource either replaces the old session (it gets a
        ``conflict`` stream error) or, with ``resource_conflict = "rename"``, gets a suffix."""
        full = account.with_resource(resource)
        old = self.service.session(full)
        if old is not None and self.service.settings["resource_conflict"] == "replace":
            old.close("conflict", "replaced by a new session with the same resource")
        elif old is not None or self.service.core.presence.endpoint(full) is not None:
            return f"{resource}-{secrets.token_hex(3)}"
        return resource

    # ---- stanzas after binding (RFC 6120 §8) ---------------------------------------------------
    def _stanza(self, element: ET.Element) -> None:
        name = element.tag
        if name not in (IQ, MESSAGE, PRESENCE):
            return self.close("unsupported-stanza-type", f"{name} is not a stanza")
        element.set("from", self.address.jid)  # §8.1.2.1: the server stamps the real sender
        if self.sm is not None:
            self.sm.received()
        try:
            if name == IQ:
                self.service.iq.dispatch(self.service, self, element)
            elif name == MESSAGE:
                messages.outbound(self.service, self, element)
            else:
                presence.outbound(self.service, self, element)
        except Exception:  # a bug in a handler must not end the session or lose the request
            log.exception("error handling a stanza from %s", self.address)
            if element.get("type") != "error" and name != PRESENCE:
                self.send(error_reply(element, StanzaError("internal-server-error")))

    # ---- output --------------------------------------------------------------------------------
    def send(self, stanza: ET.Element | bytes, message=None) -> bool:
        """Queue one stanza for the client (an element, or bytes already written: ``deliver``);
        False when the connection is gone or was too slow. An inactive client's presence and chat
        states wait (XEP-0352); with stream management a stanza is kept until acknowledged, with
        the core ``message`` it carries (XEP-0198). While the session moves to another cluster
        node (closed here, not ended) its stanzas wait to be sent there (``moving``), as its
        messages do (``deliver``, which writes bytes only for a session that is not moving)."""
        if self.closed:
            if self.moving is not None:
                self.moving.append(stanza)
                return True
            return False
        if self.csi is not None and self.csi.hold(self, stanza):
            return True
        if self.sm is not None:
            return stream_management.send(self, stanza, message)
        return self.link.send(as_bytes(stanza))

    def deliver(self, message) -> None:
        """Endpoint.deliver: a core Message as a <message/> stanza (RFC 6121 §5), remembered until
        the socket has taken it. A link that closed (a full queue) refuses it, after the messages
        it did not write went back to the router: the store keeps them in order. A session
        moving to another cluster node holds it (``moving``) for that node, which gets it once
        the session is there (``sm_cluster``); one from the offline store stays stored."""
        if self.moving is not None and message.stamp is None:
            self.moving.append(message)
            return
        if self.closed or self.address is None or stream_management.refuses(self, message):
            raise RoutingError("recipient-unavailable", f"{self} is gone")
        # written as bytes, except what an inactive client may have held back (a chat state, XEP-0352)
        stanza = messages.stanza if message.body or self.csi is None else messages.element
        if not self.send(stanza(self.service, message), message):
            self.connection_lost()
            raise RoutingError("recipient-unavailable", f"{self} is gone")
        if self.sm is None:  # with stream management, kept until acknowledged instead
            written, unwritten = self.link.written, self.unwritten
            while unwritten and unwritten[0][0] <= written:
                unwritten.popleft()
            unwritten.append((self.link.accepted, message))
        messages.delivered(self.service, self, message)

    def flush(self, timeout: float) -> bool:
        """Endpoint.flush: wait until what was queued for the client has been written to the
        socket; False if the connection closed first (its queue thrown away) or ``timeout``."""
        return not self.closed and (self.link.flush(timeout) or stream_management.handed_on(self))

    # ---- timers: the transport calls idle() after idle_timeout() silent seconds ----------------
    def idle_timeout(self) -> float:
        """Seconds of silence before ``idle()``: until the negotiation deadline while unbound,
        then the keep-alive interval, then the time allowed for the ping's answer."""
        settings = self.service.settings
        if self.address is None:
            return max(0.01, self.deadline - self.service.now())
        return settings["ping_timeout"] if self.pinged else settings["ping_interval"]

    def idle(self) -> None:
        """Silence: unbound sessions are past their deadline; a bound one is pinged (XEP-0199 §4.2)
        and closed if still silent after ``ping_timeout`` (a half-open connection)."""
        if self.address is None:
            return self.close("connection-timeout", "negotiation took too long")
        if self.pinged:
            if stream_management.resumable(self):  # a dead connection: it hibernates (XEP-0198 §5)
                self.link.send(stream_error("connection-timeout", "no answer to ping"))
                return self.link.close_after_flush("no answer to ping")
            return self.close("connection-timeout", "no answer to ping")
        stream_management.request(self)  # XEP-0198: unacknowledged stanzas? ask
        ping = ET.Element(IQ, {"type": "get", "id": "ping-" + secrets.token_hex(4),
                                "from": self.service.domain, "to": self.address.jid})
        ET.SubElement(ping, tag("ping", PING_NS))
        self.send(ping)
        self.pinged = True

    # ---- the end -------------------------------------------------------------------------------
    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the stream: with a stream error (§4.9) if ``condition``, else cleanly (§4.4)."""
        if self.closed:
            return
        if not self.header_sent:  # §4.9.1.2: a stream error needs our header before it
            self._send_header()
        if self.sm is not None:
            self.sm.resumable = False  # a stream that was ended is not resumed (XEP-0198 §5)
        self.link.send(stream_error(condition, text) if condition else STREAM_CLOSE)
        self._end(condition or "stream closed")

    def _end(self, reason: str) -> None:
        self.link.close_after_flush(reason)
        self.connection_lost()

    def connection_lost(self) -> None:
        """The session is over (closed by either side, or the TCP connection died); once the link
        has closed too (a closing stream may still be flushing), the messages it did not write go
        back to the router, after the session left the presence hub."""
        try:
            if not self.closed and not (self.link.closed and stream_management.hibernate(self)):
                self._leave()  # (a session with resumption enabled waits for it: XEP-0198 §5)
        finally:
            if self.link.closed:
                self._give_back()

    def _leave(self) -> None:
        self.closed = True
        self.mechanism = None
        service = self.service
        if self.address is not None:
            self.holding = True  # before anything yields: a refused message waits for ours
            service.core.router.hold(self.address)
            try:
                presence.closed(service, self)  # unavailable to contacts first (RFC 6121 §4.5.2)
            finally:
                service.unbind(self)
                service.core.presence.logout(self)
        service.disconnected(self)

    def _give_back(self) -> None:
        """``Router.returned`` for every message whose stanza the socket did not take whole, one
        greenlet at a time and oldest first, then let the router store what was refused since."""
        if self.giving:
            return  # another greenlet is at it: it takes what is left, in order
        self.giving = True
        router = self.service.core.router
        try:
            written, unwritten = self.link.written, self.unwritten
            while unwritten:  # in batches: more may be queued while the store writes
                batch = [unwritten.popleft() for _ in range(len(unwritten))]
                router.returned(*(message for end, message in batch if end > written))
            if self.sm is not None and self.closed:  # XEP-0198: never acknowledged by the client
                router.returned(*self.sm.messages())
        finally:
            self.giving = False
            if self.holding:
                self.holding = False
                router.release(self.address)
