"""Helpers for plugins' listeners (the only place besides transports that touches sockets).

Every accepted TCP socket gets ``TCP_NODELAY``: without it multi-write replies wait for Nagle +
delayed ACK (~40 ms each; measured 23 vs 2,332 keep-alive HTTP requests/s, research/stack.md §1).
"""
import socket

from gevent.pywsgi import WSGIHandler


def set_nodelay(sock) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class NoDelayWSGIHandler(WSGIHandler):
    """gevent's WSGI handler with TCP_NODELAY on the accepted socket."""

    def __init__(self, sock, *args, **kwargs):
        set_nodelay(sock)
        super().__init__(sock, *args, **kwargs)
