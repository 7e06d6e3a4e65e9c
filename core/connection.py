"""A TCP connection for protocol transports: a reader loop feeding a sans-IO core, bounded writes.

DESIGN §4: every accepted socket gets TCP_NODELAY; every connection has a bounded outbound queue —
a peer that stops reading is disconnected once ``max_queued`` bytes wait for it, never buffered
without bound; a peer silent for ``idle_timeout`` seconds is asked about by ``on_idle`` (send a
keep-alive, or give up). ``start_tls`` upgrades in place after the plain-text bytes queued before it
(XMPP ``<proceed/>``) have gone out. The writer greenlet exists only while bytes wait, so an idle
connection costs one greenlet (its reader). This and the plugins' transports are the only socket code.
"""
from __future__ import annotations

import logging
import socket
from collections import deque

import gevent

from .listeners import set_nodelay

log = logging.getLogger(__name__)

MAX_QUEUED = 1 << 20
RECV_SIZE = 65536


class Connection:
    __slots__ = ("sock", "peer", "max_queued", "idle_timeout", "write_timeout", "closed",
                 "close_reason", "tls", "_queue", "_queued", "_writer")

    def __init__(self, sock, peer, *, max_queued: int = MAX_QUEUED, idle_timeout: float | None = None,
                 write_timeout: float = 30.0):
        set_nodelay(sock)
        self.sock = sock
        self.peer = peer  # (host, port) it came from
        self.max_queued = max_queued
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.closed = False
        self.close_reason: str | None = None
        self.tls = False
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._writer = None  # a greenlet while bytes wait to be written; none on an idle connection

    # -- writing --
    def send(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection closes) when the peer is that far behind."""
        if self.closed:
            return False
        if self._queued + len(data) > self.max_queued:
            self.close("outbound queue full: the peer is not reading")
            return False
        self._queue.append(data)
        self._queued += len(data)
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)
        return True

    def _write_loop(self) -> None:
        try:
            while self._queue and not self.closed:
                data = b"".join(self._queue)
                self._queue.clear()
                try:
                    with gevent.Timeout(self.write_timeout):
                        self.sock.sendall(data)
                except (OSError, gevent.Timeout) as exc:
                    self.close(f"write failed: {exc or 'timeout'}")
                finally:
                    self._queued -= len(data)
        finally:
            self._writer = None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has been written (or the connection closed)."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)
        return self._writer is None or self.closed

    # -- TLS --
    def start_tls(self, context, timeout: float = 10.0) -> None:
        """Upgrade to TLS as the server (RFC 6120 §5.4.3.3, RFC 7590); the handshake runs here."""
        self.flush(self.write_timeout)
        if self.closed:
            return
        self.sock.settimeout(timeout)
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.tls = True

    # -- reading --
    def run(self, on_data, on_idle=None) -> None:
        """Read until the peer goes away or ``close()``; ``on_data(bytes)`` gets each chunk.

        ``on_idle()`` runs after ``idle_timeout`` silent seconds; without it, silence closes."""
        try:
            while not self.closed:
                self.sock.settimeout(self.idle_timeout)
                try:
                    data = self.sock.recv(RECV_SIZE)
                except socket.timeout:
                    if on_idle is None:
                        self.close("idle timeout")
                    else:
                        on_idle()
                    continue
                if not data:
                    self.close("closed by peer")
                    break
                on_data(data)
        except OSError as exc:
            self.close(f"read failed: {exc}")
        finally:
            self.close(self.close_reason or "done")

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.debug("connection %s closed: %s", self.peer, reason)
        try:
            self.sock.close()
        except OSError:
            pass

    def close_after_flush(self, reason: str, timeout: float = 2.0) -> None:
        """Close once queued bytes (a final stream error, say) are written, or after ``timeout``."""
        if not self.closed:
            gevent.spawn(self._close_when_drained, reason, timeout)

    def _close_when_drained(self, reason: str, timeout: float) -> None:
        self.flush(timeout)
        self.close(reason)
