"""The XMPP c2s transport: gevent listeners feeding each connection to a sans-IO ``c2s.Session``.

This file and ``convergence.connection`` are the only socket code of the plugin. Each accepted
socket gets a :class:`~convergence.connection.Connection` (TCP_NODELAY, a bounded outbound queue
of ``[xmpp] max_queued`` bytes: a client that stops reading is disconnected) whose reads
feed the session and ask it how long silence may last (``Session.idle_timeout``: the negotiation
deadline, then keep-alive pings that detect half-open connections). The ``listen`` port speaks
STARTTLS (RFC 6120 §5); ``tls_listen`` is Direct TLS (XEP-0368), TLS from the first byte.
``serve_websocket`` serves a session over a WebSocket the HTTP listener upgraded (RFC 7395,
``websocket.py``, ``websocket_http.py``).
"""
from __future__ import annotations

import logging

from gevent.event import Event

from convergence import certificates
from convergence.connection import QUEUE_FULL, Connection
from convergence.listeners import AddressLimit, GuardedStreamServer

from .c2s import Session
from .websocket import WebSocketLink, WebSocketSession, WebSocketStream

log = logging.getLogger(__name__)


def tls_context(core, settings):
    """The server's certificate (configured, or self-signed in data_dir) as an SSLContext."""
    cert, key = certificates.files(core.domain, core.config.data_dir, settings["tls_cert"],
                                   settings["tls_key"])
    return certificates.server_context(cert, key)


def serve_connection(service, sock, peer, direct_tls: bool = False, ended=lambda: None) -> None:
    """Start serving one client connection (in the StreamServer's handler greenlet, which then
    ends: a connection waiting for its client costs no greenlet); ``ended()`` runs once it is
    closed."""
    settings = service.settings
    conn = Connection(sock, peer, max_queued=settings["max_queued"],
                      idle_timeout=settings["negotiation_timeout"])
    if direct_tls:
        try:
            conn.start_tls(service.tls_context, timeout=settings["negotiation_timeout"])
        except OSError as exc:
            conn.close(f"TLS handshake failed: {exc}")
            ended()
            return
    session = Session(service, conn, peer, encrypted=direct_tls)
    feed(conn, session, _counted(service, conn, ended))


def _counted(service, conn: Connection, ended):
    """``ended``, after counting a connection closed for not reading (metrics)."""
    def closed() -> None:
        if conn.close_reason == QUEUE_FULL:
            service.slow_readers += 1  # metrics: disconnected for not reading
        ended()
    return closed


class OpenConnections:
    """A count of connections not yet ended, to wait for at shutdown (each session stores what
    its connection did not write when the connection closes: before the store closes)."""

    def __init__(self):
        self._open = 0
        self._none_open = Event()
        self._none_open.set()

    def opened(self) -> None:
        self._open += 1
        self._none_open.clear()

    def ended(self) -> None:
        self._open -= 1
        if not self._open:
            self._none_open.set()

    def wait(self, timeout: float | None) -> bool:
        """True once none is open; False if ``timeout`` passed first."""
        return self._none_open.wait(timeout)


def serve_websocket(service, sock, peer, encrypted: bool, websockets: OpenConnections) -> None:
    """Serve an XMPP session over the WebSocket on ``sock`` (RFC 7395; the HTTP handler has sent
    the ``101``) until it ends: the same limits as a TCP session (``max_queued``, the negotiation
    deadline, pings), the framing of ``websocket.py``. It runs in the HTTP handler's greenlet
    (which must not touch the socket afterwards), so the HTTP listener counts the connection
    until it ends; if that greenlet is killed (the HTTP listener stopping), the connection
    closes. ``websockets`` counts it until it has closed (``XmppServer.on_shutdown`` waits)."""
    settings = service.settings
    conn = Connection(sock, peer, max_queued=settings["max_queued"],
                      idle_timeout=settings["negotiation_timeout"])
    link = WebSocketLink(conn)
    session = WebSocketSession(service, link, peer, encrypted=encrypted)
    done = Event()
    websockets.opened()

    def ended() -> None:
        websockets.ended()
        done.set()
    feed(conn, WebSocketStream(session, link, settings["max_stanza_size"]),
         _counted(service, conn, ended))
    try:
        done.wait()
    finally:
        conn.close("HTTP handler ended")


def feed(conn: Connection, stream, ended=lambda: None) -> None:
    """Feed ``conn``'s bytes to ``stream`` (a c2s session or an s2s stream: ``receive``,
    ``idle``, ``idle_timeout``, ``connection_lost``), asking it after each how long silence may
    last; ``ended()`` runs once the connection has closed."""
    def on_data(data: bytes) -> None:
        stream.receive(data)
        conn.idle_timeout = stream.idle_timeout()

    def on_idle() -> None:
        stream.idle()
        conn.idle_timeout = stream.idle_timeout()

    def on_close() -> None:
        try:
            stream.connection_lost()  # a session stores what the connection did not write
        finally:
            ended()
        log.debug("xmpp stream %s ended: %s", stream, conn.close_reason)

    conn.start(on_data, on_idle, on_close)


class C2SListener(GuardedStreamServer):
    """A StreamServer whose ``stop`` first ends every session with ``system-shutdown`` and waits
    for their connections to close (a session stores what its connection did not write when it
    closes: that must happen before the store closes); ``limit`` counts a connection until its
    Connection closes (``[xmpp] max_connections_per_address``)."""

    def __init__(self, address, service, limit: AddressLimit, direct_tls: bool = False):
        super().__init__(address, self._accept, limit)
        self.service = service
        self.direct_tls = direct_tls
        self._open = OpenConnections()

    def _accept(self, sock, peer) -> None:
        self._open.opened()
        try:
            self.serve(sock, peer, self.direct_tls, lambda: self.connection_ended(peer))
        except BaseException:
            sock.close()
            self.connection_ended(peer)
            raise

    def serve(self, sock, peer, direct_tls: bool, ended) -> None:
        """Hand the accepted socket on (the s2s listener serves server streams instead)."""
        serve_connection(self.service, sock, peer, direct_tls, ended)

    def connection_ended(self, address) -> None:
        super().connection_ended(address)
        self._open.ended()

    def do_close(self, sock, *args) -> None:
        """The handler has returned: the socket now belongs to its Connection (which closes it)."""

    def stop(self, timeout=None):
        """End every stream, wait up to ``timeout`` (default ``stop_timeout``) for the connections
        to close (each has two seconds to flush its stream error), then stop listening."""
        self.service.shutdown()
        self._open.wait(self.stop_timeout if timeout is None else timeout)
        super().stop(timeout)


def listeners(service) -> list[C2SListener]:
    """The STARTTLS listener on ``listen`` and, if set, the Direct TLS one on ``tls_listen``
    (one per-address limit for both)."""
    settings = service.settings
    service.tls_context = tls_context(service.core, settings)
    limit = AddressLimit.from_settings("XMPP", settings)
    servers = [C2SListener(settings["listen"], service, limit)]
    if settings["tls_listen"]:
        servers.append(C2SListener(settings["tls_listen"], service, limit, direct_tls=True))
    return servers
