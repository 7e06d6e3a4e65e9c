"""systemd's readiness protocol (sd_notify(3)), without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

A unit with ``Type=notify`` (docs/deploy.md) starts ``convergence serve``; systemd waits for
``READY=1``, sent once every listener is accepting, before it starts the units ordered after it,
and ``STOPPING=1`` tells it the server is shutting down. Without ``NOTIFY_SOCKET`` (not started by
systemd) nothing is sent. The socket is a Unix datagram socket: a path, or an abstract name when it
starts with ``@`` (systemd uses a path; sd_notify(3) allows both).
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str, environ=os.environ) -> bool:
    """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``, ``"STATUS=…"``) to systemd; whether it was
    sent. A failure is a warning, never an error: the server serves either way."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %r on %s: %s", state, environ["NOTIFY_SOCKET"], exc)
        return False
    return True
