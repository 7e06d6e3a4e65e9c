"""A TCP connection for protocol transports: event-driven reads feeding a sans-IO core, bounded writes.

DESIGN §4: every accepted socket gets TCP_NODELAY; every connection has a bounded outbound queue —
a peer that stops reading is disconnected once ``max_queued`` bytes wait for it, never buffered
without bound; a peer silent for ``idle_timeout`` seconds is asked about by ``on_idle`` (send a
keep-alive, or give up). ``start_tls`` upgrades in place after the plain-text bytes queued before it
(XMPP ``<proceed/>``) have gone out. This and the plugins' transports are the only socket code.

The socket is non-blocking and watched by the event loop: a silent connection costs no greenlet
(no saved stack), only its watcher and timer. When bytes arrive a short-lived greenlet reads until
the socket is drained, calling ``on_data`` (and ``on_idle``) one at a time, so a connection's
callbacks never overlap. ``send`` only queues: the loop writes what was queued in one turn in one
go, and what the socket does not take when it has room; no greenlet waits to write.

Two running counts let a protocol tell which of its messages a closed connection never wrote
(issue 11: a message is never acknowledged and then lost): ``accepted``, the bytes ``send`` ever
queued (after a ``send``, the offset at which its data ends), and ``written``, the bytes the socket
ever took. Over TLS each write is one record (16 KiB at most), so a record is counted written
exactly when the whole record went to the kernel; a record cut short by the close cannot be
decrypted by the peer. What the kernel took may still never reach the peer (a reset discards the
socket buffers, the host may vanish): closing that gap needs acknowledgements from the peer
(XEP-0198 for XMPP), not this count.
"""
from __future__ import annotations

import logging
import ssl
import time

import gevent
from gevent.event import Event

from .listeners import set_nodelay

log = logging.getLogger(__name__)

MAX_QUEUED = 1 << 20
RECV_SIZE = 65536
TLS_RECORD = 16384  # the largest TLS plaintext record (RFC 8446 §5.1, RFC 5246 §6.2.1)
READ, WRITE = 1, 2  # libev event masks
QUEUE_FULL = "outbound queue full: the peer is not reading"  # the close_reason of a slow reader
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Connection:
    __slots__ = ("sock", "peer", "max_queued", "write_timeout", "closed", "close_reason", "tls",
                 "accepted", "written",
                 "_idle_timeout", "_queue", "_queued", "_on_data", "_on_idle", "_on_close", "_busy",
                 "_last", "_due", "_reading", "_timer", "_writing", "_write_timer", "_drained",
                 "_ending")

    def __init__(self, sock, peer, *, max_queued: int = MAX_QUEUED, idle_timeout: float | None = None,
                 write_timeout: float = 30.0):
        set_nodelay(sock)
        sock.settimeout(0.0)
        self.sock = sock
        self.peer = peer  # (host, port) it came from
        self.max_queued = max_queued
        self.write_timeout = write_timeout
        self.closed = False
        self.close_reason: str | None = None
        self.tls = False
        self.accepted = 0  # bytes send() ever queued
        self.written = 0  # bytes the socket ever took
        self._idle_timeout = idle_timeout
        self._queue: list[bytes] = []  # what the socket has not taken yet, oldest first
        self._queued = 0  # bytes in _queue
        self._on_data = self._on_idle = self._on_close = None
        self._busy = False  # a greenlet is running on_data / on_idle
        self._last = self._due = 0.0  # when the peer last sent something; when the timer fires
        self._reading = self._timer = self._writing = self._write_timer = None  # loop watchers
        self._drained: Event | None = None  # while someone waits in flush()
        self._ending = False  # the peer has closed its side; what is queued still goes out

    # -- writing --
    def send(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection closes) when the peer is that far behind.

        Never blocks: the caller may be any greenlet (a message from another connection). What is
        queued during one turn of the event loop goes out together, in one write."""
        if self.closed:
            return False
        if self._queued + len(data) > self.max_queued:
            self.close(QUEUE_FULL)
            return False
        if not self._queue and self._writing is None:
            gevent.get_hub().loop.run_callback(self._write)
        self._queue.append(data)
        self._queued += len(data)
        self.accepted += len(data)
        return True

    def _write(self) -> None:
        """In the loop: give the queue to the socket; if it does not take everything, watch for
        room (and give up after ``write_timeout``)."""
        if self.closed or not self._queue:
            return
        data = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
        sent = 0
        try:
            if self.tls:
                # One record per write, so that ``written`` counts whole records (a write OpenSSL
                # reports incomplete may have sent part of its records). A write that did not
                # complete (gevent's SSLSocket returns 0) is retried with the same leading bytes,
                # as OpenSSL requires (CPython sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: the
                # buffer may move).
                view = memoryview(data)
                while sent < len(data) and (took := self.sock.send(view[sent:sent + TLS_RECORD])):
                    sent += took
            else:
                sent = self.sock.send(data)
        except _WOULD_BLOCK:
            pass
        except OSError as exc:
            self.written += sent
            return self.close(f"write failed: {exc}")
        self.written += sent
        if sent == len(data):
            self._queue.clear()
            self._queued = 0
            self._stop(self._writing, self._write_timer)
            self._writing = self._write_timer = None
            if self._drained is not None:
                self._drained.set()
            return
        self._queue[:] = [data[sent:]]
        self._queued = len(data) - sent
        if self._writing is None:
            loop = gevent.get_hub().loop
            self._writing = loop.io(self.sock.fileno(), WRITE)
            self._writing.start(self._write)
            self._write_timer = loop.timer(self.write_timeout)
            self._write_timer.start(self.close, "write failed: timeout")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been written, the connection closed or ``timeout``
        passed; True only if the socket took every byte and the connection is still open (a
        closed connection threw its queue away: what was queued may not have been written)."""
        if self._queue and not self.closed:
            if self._drained is None:
                self._drained = Event()
            self._drained.clear()
            self._drained.wait(timeout)
        return not self._queue and not self.closed

    # -- TLS --
    def start_tls(self, context, timeout: float = 10.0, server_side: bool = True,
                  server_hostname: str | None = None) -> None:
        """Upgrade to TLS (RFC 6120 §5.4.3.3, RFC 7590), as the server or, with ``server_side``
        False, as the client of ``server_hostname`` (SNI); the handshake runs here."""
        self._write()  # the plain-text bytes before it (<proceed/>) go now, if the socket has room
        self.flush(self.write_timeout)
        if self.closed:
            return
        self._stop(self._reading)  # it watches the plain socket object
        self._reading = None
        self.sock.settimeout(timeout)
        self.sock = context.wrap_socket(self.sock, server_side=server_side,
                                        server_hostname=None if server_side else server_hostname)
        self.sock.settimeout(0.0)
        self.tls = True

    # -- reading --
    @property
    def idle_timeout(self) -> float | None:
        """Seconds of silence (since the peer last sent something) before ``on_idle``."""
        return self._idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, value: float | None) -> None:
        self._idle_timeout = value
        if self._on_data is not None and not self._busy:
            self._arm_timer()

    def start(self, on_data, on_idle=None, on_close=None) -> None:
        """Read in the background and return at once: ``on_data(bytes)`` gets each chunk,
        ``on_idle()`` runs after ``idle_timeout`` silent seconds (without it, silence closes), and
        ``on_close()`` runs once, in a greenlet of its own, after the connection closed. The socket
        is the connection's from now on: a StreamServer handler that returns after ``start`` must
        keep the server from closing it (override ``do_close``)."""
        self._on_data, self._on_idle, self._on_close = on_data, on_idle, on_close
        self._last = time.monotonic()
        self._watch(READ)

    def run(self, on_data, on_idle=None) -> None:
        """Like ``start``, but return only once the connection has closed."""
        done = Event()
        self.start(on_data, on_idle, done.set)
        done.wait()

    def _watch(self, events: int) -> None:
        """Let the loop wait for the peer (no greenlet meanwhile), and for its silence."""
        if self.closed or self._ending:
            return
        if self._reading is None or self._reading.events & (READ | WRITE) != events:
            self._stop(self._reading)
            self._reading = gevent.get_hub().loop.io(self.sock.fileno(), events)
        self._reading.start(self._wake, False)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Have the loop call back once the peer has been silent for ``idle_timeout`` seconds."""
        if self.closed:
            return
        due = None if self._idle_timeout is None else self._last + self._idle_timeout
        if self._timer is not None:
            if due is not None and self._timer.active and self._due <= due:
                return  # fires in time; _wake re-arms it if the peer spoke meanwhile
            self._stop(self._timer)
            self._timer = None
        if due is not None:
            self._due = due
            self._timer = gevent.get_hub().loop.timer(max(0.0, due - time.monotonic()))
            self._timer.start(self._wake, True)

    @staticmethod
    def _stop(*watchers) -> None:
        for watcher in watchers:
            if watcher is not None:
                watcher.stop()
                watcher.close()

    def _wake(self, silent: bool) -> None:
        """The loop's callback: the peer sent bytes (or was silent); serve them in a greenlet."""
        if self._busy or self.closed:
            return
        if silent and time.monotonic() < self._last + (self._idle_timeout or 0):
            return self._arm_timer()  # the peer spoke since the timer was set
        self._busy = True
        self._reading.stop()
        gevent.spawn_raw(self._serve, silent)

    def _serve(self, silent: bool) -> None:
        """Run on_idle if silent, then on_data for everything readable now; watch again after."""
        events = READ
        try:
            if silent:
                if self._on_idle is None:
                    return self.close("idle timeout")
                self._on_idle()
            while not self.closed:
                try:
                    data = self.sock.recv(RECV_SIZE)
                except ssl.SSLWantWriteError:  # TLS must write before it reads (renegotiation)
                    events = WRITE
                    break
                except (BlockingIOError, ssl.SSLWantReadError):
                    break
                if not data:  # the peer closed its side; a half-close still reads our answers
                    self._ending = True  # (a request then FIN: its response is queued, not sent)
                    return self.close_after_flush("closed by peer", self.write_timeout)
                self._last = time.monotonic()
                self._on_data(data)
        except OSError as exc:
            self.close(f"read failed: {exc}")
        except Exception:  # a bug in a protocol core must not leave the connection half alive
            log.exception("error handling data from %s", self.peer)
            self.close("internal error")
        finally:
            if silent:
                self._last = time.monotonic()  # on_idle answered this silence; the next counts anew
            self._busy = False
            self._watch(events)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.debug("connection %s closed: %s", self.peer, reason)
        self._stop(self._reading, self._timer, self._writing, self._write_timer)
        self._reading = self._timer = self._writing = self._write_timer = None
        self._queue.clear()
        self._queued = 0
        try:
            self.sock.close()
        except OSError:
            pass
        if self._drained is not None:
            self._drained.set()
        if self._on_close is not None:
            gevent.spawn(self._on_close)

    def close_after_flush(self, reason: str, timeout: float = 2.0) -> None:
        """Close once queued bytes (a final stream error, say) are written, or after ``timeout``."""
        if not self.closed:
            gevent.spawn(self._close_when_drained, reason, timeout)

    def _close_when_drained(self, reason: str, timeout: float) -> None:
        self.flush(timeout)
        self.close(reason)
