"""SIP transports (RFC 3261 §18): UDP, TCP and TLS listeners, flows, and the timer wheel.

The only socket and gevent code of the SIP plugin. What is read goes to the three callbacks given
by :meth:`Transport.receive_with` (the :class:`~convergence.plugins.sip.dispatcher.Dispatcher`'s);
answers go back through the flow the request came on (a UDP source address, a TCP/TLS
connection: RFC 3261 §18.2.2, RFC 3581 §4), so a response always leaves over the connection its
request arrived on.

- UDP: one greenlet reads datagrams in a tight loop and handles each in place (no greenlet per
  datagram), yielding to the hub every :data:`UDP_BATCH` datagrams so TCP peers and timers run.
  :meth:`Transport.read_waiting` handles at once what already waits on the socket: the
  transaction layer calls it before a transaction timer retransmits or gives up, so that an answer
  queued behind a backlog is seen first (else an overloaded server resends requests already
  answered, adding to its load).
- TCP/TLS: :class:`convergence.connection.Connection` (bounded outbound queue) with a
  :class:`StreamParser` per connection; CRLFCRLF pings get a CRLF pong (RFC 5626 §4.4.1); a message
  left unfinished for ``message_timeout`` seconds, or framing that is lost, closes the connection.
- :class:`Timers`: one greenlet runs callbacks at their monotonic time (transaction timers,
  binding expiry), woken when an earlier one is added; a callback may run up to
  :data:`TIMER_SLACK` late, so that the many due close together under load run in one wake-up.
- :class:`Clock`: the plugin's one clock (monotonic and wall time), and :func:`machine_names`, the
  host name lookup that tells which hosts mean this machine when it listens on all addresses.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import ssl

import gevent
import gevent.socket
from gevent.event import Event

from convergence.connection import Connection
from convergence.listeners import AddressLimit, GuardedStreamServer

from .message import KeepAlive, ParseError, StreamParser

log = logging.getLogger(__name__)

UDP_BATCH = 64  # datagrams handled before letting other greenlets run
MAX_DATAGRAM = 65535
#: Seconds a timer callback may run late (RFC 3261 timers are T1 = 500 ms and longer): under load a
#: transaction timer falls due every millisecond or so, and waking for each one cost more CPU than
#: the callbacks themselves.
TIMER_SLACK = 0.01


@dataclass(frozen=True)
class Clock:
    """The SIP plugin's one clock: ``monotonic()`` seconds for deadlines, timers and rate limits,
    ``wall()`` seconds since the epoch for what outlives the process or is shown (a binding's
    expiry in the store, the ``Date`` of a 200). Tests pass their own functions."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    def utc(self) -> datetime:
        """The wall time as the store keeps times: naive UTC."""
        return datetime.fromtimestamp(self.wall(), timezone.utc).replace(tzinfo=None)


def machine_names() -> set[str]:
    """This machine's host name and the addresses it resolves to, lower-cased (a blocking
    lookup: done once, at start-up, when SIP listens on all addresses)."""
    name = socket.gethostname().lower()
    try:
        return {name, *socket.gethostbyname_ex(name)[2]}
    except OSError:
        return {name}


class UdpFlow:
    """Where a UDP datagram came from, and where its answers go."""

    transport = "UDP"
    reliable = False
    alive = True
    __slots__ = ("sock", "peer")

    def __init__(self, sock, peer):
        self.sock, self.peer = sock, peer

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendto(data, self.peer)
        except OSError as exc:
            log.info("SIP: cannot send to udp:%s:%s: %s", *self.peer[:2], exc)
            return False
        return True

    @property
    def key(self) -> str:
        return f"udp:{self.peer[0]}:{self.peer[1]}"


class StreamFlow:
    """A TCP or TLS connection (accepted or opened by us); sends queue on the connection."""

    reliable = True

    def __init__(self, connection: Connection | None, transport: str, peer):
        self.connection, self.transport, self.peer = connection, transport, peer
        self._waiting: list[bytes] | None = None if connection else []  # while connecting

    @property
    def alive(self) -> bool:
        if self._waiting is not None:
            return True
        return self.connection is not None and not self.connection.closed

    def send(self, data: bytes) -> bool:
        if self._waiting is not None:
            self._waiting.append(data)
            return True
        return self.connection is not None and self.connection.send(data)

    def connected(self, connection: Connection | None) -> None:
        waiting, self._waiting = self._waiting, None
        self.connection = connection
        if connection is None:
            log.info("SIP: cannot connect to %s:%s:%s", self.transport.lower(), *self.peer[:2])
            return
        for data in waiting:
            connection.send(data)

    @property
    def key(self) -> str:
        return f"{self.transport.lower()}:{self.peer[0]}:{self.peer[1]}"


class Timers:
    """Callbacks at monotonic times, run one after the other by one greenlet."""

    def __init__(self, clock: Clock):
        self.clock = clock.monotonic
        self._heap: list = []
        self._order = itertools.count()
        self._wake = Event()
        self._runner = None

    def call_at(self, at: float, callback, *args) -> None:
        heapq.heappush(self._heap, (at, next(self._order), callback, args))
        if self._heap[0][0] == at:
            self._wake.set()

    def start(self) -> None:
        self._runner = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.kill(block=False)

    def _run(self) -> None:
        heap = self._heap
        while True:
            now = self.clock()
            while heap and heap[0][0] <= now:
                _, _, callback, args = heapq.heappop(heap)
                try:
                    callback(*args)
                except Exception:
                    log.exception("SIP timer %r failed", callback)
            self._wake.clear()
            self._wake.wait(heap[0][0] + TIMER_SLACK - self.clock() if heap else None)


class UdpListener:
    """A UDP socket read by one greenlet; shaped like a gevent server for ``add_listeners``."""

    def __init__(self, address, transport: Transport, on_datagram):
        self.address, self.transport, self.on_datagram = address, transport, on_datagram
        self.socket = None
        self._reader = None
        self._shared = False

    def share(self) -> None:
        """Bind with SO_REUSEPORT (workers, core/server.py): every worker binds the port and the
        kernel hands each datagram to one of them by a hash of its source and destination, so a
        phone's datagrams from one address and port reach one worker (docs/cluster.md)."""
        self._shared = True

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = gevent.socket.socket(family, socket.SOCK_DGRAM)
        try:
            if self._shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind(self.address)
        except OSError:
            sock.close()
            raise
        self.address = sock.getsockname()[:2]
        self.socket = sock
        self.transport.udp = self
        self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        sock = self.socket
        while True:
            for _ in range(UDP_BATCH):
                try:
                    data, peer = sock.recvfrom(MAX_DATAGRAM)
                except OSError as exc:
                    if sock.fileno() < 0:
                        return
                    log.debug("SIP UDP read: %s", exc)  # ICMP errors of earlier sends
                    continue
                self._receive(data, peer)
            gevent.sleep(0)

    def _receive(self, data: bytes, peer) -> None:
        try:
            self.on_datagram(data, UdpFlow(self.socket, peer))
        except Exception:
            log.exception("SIP: failed to handle a datagram from %s:%s", *peer[:2])

    def read_waiting(self) -> None:
        """Handle the datagrams waiting on the socket now, the oldest :data:`UDP_BATCH` at most
        (as many as the reader handles between yields), without blocking. Called from another
        greenlet than the reader's: they are read with a zero timeout first, so the reader never
        sees that timeout, then handled in order."""
        sock, waiting = self.socket, []
        if sock is None or sock.fileno() < 0:
            return
        timeout = sock.gettimeout()
        sock.settimeout(0.0)  # gevent then raises at once where it would wait
        try:
            for _ in range(UDP_BATCH):
                try:
                    waiting.append(sock.recvfrom(MAX_DATAGRAM))
                except BlockingIOError:
                    break
                except OSError as exc:
                    if sock.fileno() < 0:
                        break
                    log.debug("SIP UDP read: %s", exc)  # ICMP errors of earlier sends
        finally:
            sock.settimeout(timeout)
        for data, peer in waiting:
            self._receive(data, peer)

    def stop(self, timeout=None) -> None:
        if self._reader is not None:
            self._reader.kill(block=False)
        if self.socket is not None:
            if self.transport.closing is not None:  # last words (NOTIFYs) while it can send
                self.transport.closing()
            self.socket.close()


class Transport:
    """The listeners and connections of one SIP service."""

    def __init__(self, settings: dict, clock: Clock, tls_context=None):
        self.settings, self.clock, self.tls_context = settings, clock, tls_context
        self.udp: UdpListener | None = None
        self.connections: dict[str, StreamFlow] = {}  # flow key → live stream flow
        self._datagram = self._message = self._refused = None
        self.closing = None  # called once as the listeners stop, before the UDP socket closes

    def receive_with(self, datagram, message, refused) -> None:
        """Where what is read goes: ``datagram(data, flow)`` for each UDP datagram,
        ``message(message, flow)`` for each message framed on a stream, ``refused(error, flow)``
        for each framing or parse error there. Given once, by the plugin object, before the
        listeners start: the element that receives is built after this transport, as it sends
        through it (the one cycle of the plugin, closed here)."""
        self._datagram, self._message, self._refused = datagram, message, refused

    def listeners(self) -> list:
        """UDP and TCP on ``listen``, TLS on ``tls_listen``; the TCP and TLS listeners share one
        per-address limit (``max_connections_per_address``)."""
        listen = self.settings["listen"]
        limit = AddressLimit.from_settings("SIP", self.settings)
        servers = [UdpListener(listen, self, self._datagram),
                   GuardedStreamServer(listen, lambda sock, peer: self._serve(sock, peer, "TCP"),
                                       limit)]
        if self.settings["tls_listen"] and self.tls_context is not None:
            servers.append(GuardedStreamServer(self.settings["tls_listen"],
                                               lambda sock, peer: self._serve(sock, peer, "TLS"),
                                               limit))
        return servers

    def read_waiting(self) -> None:
        """Handle what already waits on the UDP socket (see :meth:`UdpListener.read_waiting`)."""
        if self.udp is not None:
            self.udp.read_waiting()

    # -- outbound --
    def flow(self, transport: str, host: str, port: int | None):
        """A flow to ``host:port`` over ``transport``: the live connection when there is one, else
        a new one (connected in the background; what is sent meanwhile waits for it)."""
        transport = transport.upper()
        if transport == "UDP":
            if self.udp is None or self.udp.socket is None:
                return None
            return UdpFlow(self.udp.socket, (host, port or 5060))
        port = port or (5061 if transport == "TLS" else 5060)
        key = f"{transport.lower()}:{host}:{port}"
        flow = self.connections.get(key)
        if flow is None or not flow.alive:
            flow = self.connections[key] = StreamFlow(None, transport, (host, port))
            gevent.spawn(self._connect, flow)
        return flow

    def flow_of(self, key: str):
        """The flow named by a key such as ``udp:192.0.2.1:5060`` (stored with a binding)."""
        transport, _, rest = key.partition(":")
        host, _, port = rest.rpartition(":")
        if not (host and port.isdigit()):
            return None
        if transport == "udp":
            return self.flow("UDP", host, int(port))
        flow = self.connections.get(key)
        return flow if flow is not None and flow.alive else None

    def _connect(self, flow: StreamFlow) -> None:
        try:
            sock = gevent.socket.create_connection(flow.peer, timeout=10)
            if flow.transport == "TLS":  # to a phone's own contact: phones have no certificate
                context = ssl.create_default_context()  # a CA would vouch for, so none is checked
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                sock = context.wrap_socket(sock)
        except OSError as exc:
            log.info("SIP: connect to %s failed: %s", flow.key, exc)
            self.connections.pop(flow.key, None)
            flow.connected(None)
            return
        self._run_stream(Connection(sock, flow.peer, idle_timeout=self.settings["message_timeout"]),
                         flow)

    # -- inbound streams --
    def _serve(self, sock, peer, transport: str) -> None:
        connection = Connection(sock, peer, idle_timeout=self.settings["message_timeout"])
        if transport == "TLS":
            try:
                connection.start_tls(self.tls_context)
            except (OSError, ValueError) as exc:
                connection.close(f"TLS handshake failed: {exc}")
                return
        flow = StreamFlow(connection, transport, peer[:2])
        self.connections[flow.key] = flow
        self._run_stream(connection, flow)

    def _run_stream(self, connection: Connection, flow: StreamFlow) -> None:
        """Read messages until the connection ends (RFC 3261 §18.3 framing)."""
        if flow.connection is None:
            self.connections[flow.key] = flow
            flow.connected(connection)
        settings, receive, refused = self.settings, self._message, self._refused
        monotonic = self.clock.monotonic
        parser = StreamParser(settings["max_message_size"])
        started = None  # when the unfinished message in the parser began
        last = monotonic()

        def on_data(data: bytes) -> None:
            nonlocal started, last
            last = monotonic()
            parser.feed(data)
            while not connection.closed:
                try:
                    event = parser.next_message()
                except ParseError as err:
                    refused(err, flow)
                    if err.fatal:
                        connection.close_after_flush(f"SIP framing lost: {err}")
                        return
                    continue
                if event is None:
                    break
                if isinstance(event, KeepAlive):
                    connection.send(KeepAlive.PONG)
                else:
                    receive(event, flow)
            started = (started or last) if parser.pending else None
            if started is not None and last - started > settings["message_timeout"]:
                connection.close("SIP message unfinished: timed out")

        def on_idle() -> None:
            silent = monotonic() - last
            if parser.pending:
                connection.close("SIP message unfinished: timed out")
            elif silent > settings["idle_timeout"]:
                connection.close("idle")

        try:
            connection.run(on_data, on_idle)
        finally:
            if self.connections.get(flow.key) is flow:
                del self.connections[flow.key]
            log.debug("SIP %s closed: %s", flow.key, connection.close_reason)
