"""XMPP federation for one core: the ``[xmpp] s2s_listen`` listener, outbound streams per peer
domain, their queues, and the dialback checks between them (RFC 6120, XEP-0220, XEP-0178).

The streams themselves are the sans-IO state machines of ``s2s.py``; this is the socket side.

- **Inbound**: :class:`S2SListener` accepts, at most ``s2s_max_streams`` streams in total and
  ``s2s_max_streams_per_address`` per source address (loopback is not exempt); each gets a
  :class:`~convergence.connection.Connection` (outbound queue bounded by ``max_queued``: a peer
  that stops reading is disconnected) feeding an ``InboundStream``.
- **Outbound**: one stream per peer domain (our domain is the only originating one), opened on the
  first stanza and reused; stanzas wait in a queue of at most ``s2s_max_queued`` per domain while
  it is set up. Addresses come from ``peers.Peers`` (``s2s_hosts``, then DNS SRV). A failed
  attempt is retried with a doubling back-off (0.5 s up to 30 s) for ``s2s_retry_window``
  seconds; then every queued stanza's sender is told: ``remote-server-not-found`` (no such domain,
  refused connection, failed authentication) or ``remote-server-timeout`` (no answer in time).
  A stream that breaks hands back the stanzas its socket had not taken (``returned``): they go
  first in the domain's queue and leave on the next stream (or bounce as above), never dropped.
- **Dialback** (XEP-0220 §2.1.2): a key received inbound is checked by sending ``<db:verify/>``
  over our outbound stream to that domain (opened if needed; usable once TLS is up, before it is
  authenticated) and matching the answer by (domain, stream id).
- **Certificates**: ours (``tls_cert``, or the generated self-signed one) serves both directions
  and is offered as a client certificate outbound, for SASL EXTERNAL. With ``s2s_secure_auth``
  inbound peers are asked for theirs (``CERT_OPTIONAL``), for SASL EXTERNAL inbound. The peer's certificate is
  checked (``certificate_ok``) with ``cryptography``'s verifier against ``s2s_ca_file`` or the
  system store, for the peer's domain, when ``s2s_secure_auth`` asks for it.
- ``shutdown`` (SIGTERM) ends every stream with ``system-shutdown`` and tells the senders of
  queued stanzas ``remote-server-timeout``.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import time
import xml.etree.ElementTree as ET
from collections import deque

import gevent
from gevent import socket
from gevent.event import Event

from convergence import RoutingError, certificates
from convergence.connection import Connection
from convergence.listeners import AddressLimit

from . import dialback, transport
from .peers import NoSuchDomain, Peers, dns_query
from .s2s import DB, InboundStream, OutboundStream

log = logging.getLogger(__name__)

BACKOFF = (0.5, 30.0)  # first and largest pause between connection attempts, seconds


def load_secret(data_dir) -> bytes:
    """The dialback secret in ``<data_dir>/s2s/dialback_secret`` (XEP-0185 §3), made once (0600)."""
    path = data_dir / "s2s" / "dialback_secret"
    try:
        secret = path.read_bytes()
        if len(secret) >= dialback.SECRET_BYTES:
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(dialback.SECRET_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def client_context(cert, key) -> ssl.SSLContext:
    """TLS 1.2+ for the streams we open: our certificate offered (XEP-0178), the peer's checked
    by ``certificate_ok`` rather than in the handshake (a self-signed peer still gets dialback)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(cert, key)
    return context


def trusted_certificates(ca_file: str) -> list:
    """The trust anchors: ``s2s_ca_file``, else the system store (PEM)."""
    from cryptography import x509
    path = ca_file or ssl.get_default_verify_paths().cafile or ssl.get_default_verify_paths().openssl_cafile
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as exc:
        log.warning("s2s: cannot read trust anchors from %s: %s", path, exc)
        return []


def certificate_valid(der: bytes | None, domain: str, anchors: list) -> bool:
    """Whether the peer certificate ``der`` chains to ``anchors`` and names ``domain`` (RFC 6125,
    RFC 6120 §13.7.2). Intermediate certificates the peer sent are not available to Python 3.11's
    ssl module, so the leaf must be issued by a trust anchor."""
    if not der or not anchors:
        return False
    from cryptography import x509
    from cryptography.x509 import verification
    try:
        name = x509.IPAddress(ipaddress.ip_address(domain.strip("[]")))
    except ValueError:
        name = x509.DNSName(domain)
    try:
        verifier = verification.PolicyBuilder().store(verification.Store(anchors)).build_server_verifier(name)
        verifier.verify(x509.load_der_x509_certificate(der), [])
        return True
    except (verification.VerificationError, ValueError):
        return False


class Federation:
    """The server-to-server side of one core's XMPP plugin (see the module docstring)."""

    def __init__(self, core, settings: dict, query=dns_query):
        self.core = core
        self.settings = settings
        self.domain: str = core.domain
        self.now = time.monotonic
        self.secret = load_secret(core.config.data_dir)
        self.server_tls = None  # ssl contexts, made by ``listener()`` (or a test)
        self.client_tls = None
        self.anchors = trusted_certificates(settings["s2s_ca_file"]) if settings["s2s_secure_auth"] \
            or settings["s2s_ca_file"] else []
        self.peers = Peers(dict(settings["s2s_hosts"]), self._query)
        self._dns = query
        self.limit = AddressLimit("XMPP s2s", settings["s2s_max_streams_per_address"])
        self.inbound_streams: set[InboundStream] = set()
        self.outbound: dict[str, OutboundStream] = {}  # remote domain -> its stream (maybe not ready)
        self.queues: dict[str, deque] = {}  # remote domain -> (stanza, bounce) waiting for a stream
        self.questions: dict[str, list] = {}  # remote domain -> <db:verify/> waiting for a stream
        self.verifying: dict[tuple[str, str], list] = {}  # (domain, stream id) -> inbound streams
        self.connecting: dict[str, gevent.Greenlet] = {}
        self._settled: dict[OutboundStream, Event] = {}
        self._pumping: set[OutboundStream] = set()  # streams whose queue waits for the socket
        self.stopping = False
        self.on_stanza = lambda element: None  # set by XmppServer: s2s_routing.Inbound.receive

    def _query(self, name: str):
        """dnspython blocks: run it in the hub's thread pool."""
        return gevent.get_hub().threadpool.apply(self._dns, (name,))

    def make_tls(self, cert, key) -> None:
        self.server_tls = certificates.server_context(cert, key)
        self.client_tls = client_context(cert, key)
        if self.settings["s2s_secure_auth"]:
            # XEP-0178 inbound: peers are asked for their certificate. OpenSSL then fails the
            # handshake of a peer whose certificate does not validate (Python's ssl has no verify
            # callback), which is what s2s_secure_auth asks anyway (docs/xmpp.md, Authentication).
            self.server_tls.verify_mode = ssl.CERT_OPTIONAL
            if self.settings["s2s_ca_file"]:
                self.server_tls.load_verify_locations(cafile=self.settings["s2s_ca_file"])

    def certificate_ok(self, link, domain: str) -> bool:
        try:
            der = link.sock.getpeercert(binary_form=True)
        except (AttributeError, ValueError, OSError):
            der = None
        return certificate_valid(der, domain, self.anchors)

    # ---- sending ----
    def send(self, domain: str, element, bounce=None) -> None:
        """Send a stanza (``jabber:client`` names) to ``domain``: now if its stream is ready,
        else queued while it is set up; ``bounce(condition, text)`` runs if it never can be.
        RoutingError ``resource-constraint`` when the queue is full."""
        if self.stopping:
            raise RoutingError("remote-server-timeout", "the server is shutting down")
        stream = self.outbound.get(domain)
        if stream is not None and stream.ready and not stream.closed and not self.queues.get(domain):
            if stream.send_stanza(element, bounce):
                return
        queue = self.queues.setdefault(domain, deque())
        if len(queue) >= self.settings["s2s_max_queued"]:
            raise RoutingError("resource-constraint", f"{len(queue)} stanzas already wait for {domain}")
        queue.append((element, bounce))
        self._connect(domain)

    def _connect(self, domain: str) -> None:
        stream = self.outbound.get(domain)
        if domain in self.connecting or (stream is not None and not stream.closed):
            return
        self.connecting[domain] = gevent.spawn(self._establish, domain)

    def _establish(self, domain: str) -> None:
        """Try the domain's addresses, with back-off, until a stream is ready or
        ``s2s_retry_window`` has passed (then the queued stanzas bounce)."""
        settings = self.settings
        give_up = self.now() + settings["s2s_retry_window"]
        pause = BACKOFF[0]
        condition, text = "remote-server-not-found", f"cannot reach {domain}"
        try:
            while not self.stopping:
                try:
                    targets = self.peers.targets(domain)
                except NoSuchDomain as exc:
                    return self._failed(domain, "remote-server-not-found", str(exc))
                except OSError as exc:
                    targets, condition, text = [], "remote-server-timeout", str(exc)
                for host, port in targets:
                    outcome = self._attempt(domain, host, port)
                    if outcome is None:
                        return  # ready
                    condition, text, final = outcome
                    if final:
                        return self._failed(domain, condition, text)
                if self.now() + pause > give_up:
                    return self._failed(domain, condition, text)
                log.info("s2s: %s unreachable (%s); trying again in %.1f s", domain, text, pause)
                gevent.sleep(pause)
                pause = min(BACKOFF[1], pause * 2)
        finally:
            self.connecting.pop(domain, None)

    def _attempt(self, domain: str, host: str, port: int):
        """One connection: None once ready, else (condition, text, final)."""
        settings = self.settings
        try:
            sock = socket.create_connection((host, port), timeout=settings["s2s_connect_timeout"])
        except socket.timeout:
            return "remote-server-timeout", f"{host}:{port} did not answer", False
        except OSError as exc:
            return "remote-server-not-found", f"{host}:{port}: {exc.strerror or exc}", False
        conn = Connection(sock, (host, port), max_queued=settings["max_queued"],
                          idle_timeout=settings["negotiation_timeout"])
        stream = OutboundStream(self, conn, (host, port), domain)
        settled = self._settled[stream] = Event()
        self.outbound[domain] = stream
        transport.feed(conn, stream)
        stream.start()
        settled.wait()
        self._settled.pop(stream, None)
        if stream.ready and not stream.closed:
            return None
        # a stream that got as far as authentication was refused: trying again will not help
        timeout = "timeout" in stream.reason
        return ("remote-server-timeout" if timeout else "remote-server-not-found",
                f"{domain}: {stream.reason}", stream.usable and not timeout)

    def _failed(self, domain: str, condition: str, text: str) -> None:
        log.warning("s2s: giving up on %s: %s", domain, text)
        for element, bounce in self.queues.pop(domain, ()):
            if bounce is not None:
                gevent.spawn(bounce, condition, text)
        self.questions.pop(domain, None)
        for (remote, _), streams in list(self.verifying.items()):
            if remote == domain:
                for inbound in self.verifying.pop((remote, _)):
                    inbound.dialback_result(domain, False)

    # ---- callbacks of the streams (s2s.py) ----
    def outbound_usable(self, stream: OutboundStream) -> None:
        """TLS is up: our dialback questions for that domain can go."""
        for question in self.questions.pop(stream.remote, ()):
            stream.send(question)

    def outbound_ready(self, stream: OutboundStream) -> None:
        settled = self._settled.get(stream)
        if settled is not None:
            settled.set()
        self._drain(stream)

    def _drain(self, stream: OutboundStream) -> None:
        """The domain's queue onto its ready stream, in order, as fast as the socket takes it
        (a backlog larger than ``max_queued`` must not overflow the new stream's link); what the
        stream refuses (its link closed meanwhile) stays queued for the next stream."""
        queue, link = self.queues.get(stream.remote), stream.link
        while queue:
            if link.accepted - link.written > link.max_queued // 2:
                if stream not in self._pumping:
                    self._pumping.add(stream)
                    gevent.spawn(self._pump, stream)
                return
            element, bounce = queue[0]
            if not stream.send_stanza(element, bounce):
                return
            queue.popleft()
        if queue is not None and self.queues.get(stream.remote) is queue:
            del self.queues[stream.remote]

    def _pump(self, stream: OutboundStream) -> None:
        """Wait until the link has written its queue (or closed), then drain some more."""
        try:
            stream.link.flush(None)
        finally:
            self._pumping.discard(stream)
        if stream.ready and not stream.closed and self.outbound.get(stream.remote) is stream:
            self._drain(stream)

    def returned(self, stream: OutboundStream, items: list) -> None:
        """The stanzas a closed stream did not write, oldest first: before what is queued, onto
        the domain's ready stream or the next one; while shutting down they bounce."""
        domain = stream.remote
        log.info("s2s: %d stanzas to %s were not written before its stream closed (%s); "
                 "sending them again", len(items), domain, stream.reason)
        if self.stopping:
            for element, bounce in items:
                if bounce is not None:
                    gevent.spawn(bounce, "remote-server-timeout", "the server is shutting down")
            return
        queue = self.queues.setdefault(domain, deque())
        queue.extendleft(reversed(items))
        current = self.outbound.get(domain)
        if current is not None and current.ready and not current.closed:
            self._drain(current)
        else:
            self._connect(domain)

    def stream_ended(self, stream, reason: str) -> None:
        log.info("s2s %s stream %s ended: %s", stream.direction, stream.peer, reason)
        if stream.direction == "in":
            self.inbound_streams.discard(stream)
            for key in [k for k, waiting in self.verifying.items() if stream in waiting]:
                self.verifying[key] = [s for s in self.verifying[key] if s is not stream]
                if not self.verifying[key]:
                    del self.verifying[key]
            return
        settled = self._settled.get(stream)
        if settled is not None:
            settled.set()
        if self.outbound.get(stream.remote) is stream:
            del self.outbound[stream.remote]
        if self.queues.get(stream.remote) and not self.stopping:
            self._connect(stream.remote)  # stanzas came while it was closing: a new stream

    def verify_dialback(self, inbound: InboundStream, domain: str, key: str) -> None:
        """Ask ``domain``'s authoritative server whether ``key`` is right (XEP-0220 §2.1.2)."""
        question = ET.Element(DB + "verify", {"from": self.domain, "to": domain, "id": inbound.stream_id})
        question.text = key
        self.verifying.setdefault((domain, inbound.stream_id), []).append(inbound)
        stream = self.outbound.get(domain)
        if stream is not None and stream.usable and not stream.closed:
            stream.send(question)
            return
        self.questions.setdefault(domain, []).append(question)
        if self.stopping:
            return self._failed(domain, "remote-server-timeout", "shutting down")
        self._connect(domain)

    def verify_answer(self, stream: OutboundStream, domain: str | None, stream_id: str, valid: bool) -> None:
        if domain != stream.remote:
            return  # an answer may only come from the domain we asked
        for inbound in self.verifying.pop((domain, stream_id), ()):
            inbound.dialback_result(domain, valid)

    def inbound(self, stream: InboundStream, element) -> None:
        """An authenticated stanza (``jabber:client`` names): to ``on_stanza`` (s2s_routing)."""
        self.on_stanza(element)

    # ---- inbound connections ----
    def serve(self, sock, peer, ended=lambda: None) -> None:
        if len(self.inbound_streams) >= self.settings["s2s_max_streams"] or self.stopping:
            log.warning("s2s: refused a stream from %s: %d open (s2s_max_streams)", peer[0],
                        len(self.inbound_streams))
            sock.close()
            ended()
            return
        conn = Connection(sock, peer, max_queued=self.settings["max_queued"],
                          idle_timeout=self.settings["negotiation_timeout"])
        stream = InboundStream(self, conn, peer)
        self.inbound_streams.add(stream)
        transport.feed(conn, stream, ended)

    def shutdown(self) -> None:
        """End every stream with ``system-shutdown``; queued stanzas bounce."""
        self.stopping = True
        for greenlet in list(self.connecting.values()):
            greenlet.kill(block=False)
        for domain in list(self.queues):
            self._failed(domain, "remote-server-timeout", "the server is shutting down")
        for stream in [*self.inbound_streams, *self.outbound.values()]:
            stream.close("system-shutdown", "the server is shutting down")


class S2SListener(transport.C2SListener):
    """The ``s2s_listen`` listener: counts streams per address, ends them all on ``stop``."""

    def __init__(self, address, federation: Federation):
        super().__init__(address, federation, federation.limit)

    def serve(self, sock, peer, direct_tls, ended):
        self.service.serve(sock, peer, ended)


def listener(federation: Federation, xmpp_settings) -> S2SListener | None:
    """The TLS contexts (our certificate) and the ``s2s_listen`` listener."""
    cert, key = certificates.files(federation.domain, federation.core.config.data_dir,
                                   xmpp_settings["tls_cert"], xmpp_settings["tls_key"])
    federation.make_tls(cert, key)
    return S2SListener(xmpp_settings["s2s_listen"], federation)

