"""What every plugin listener shares (the only socket code besides the transports): guards against
connection exhaustion and slow clients.

- Every accepted TCP socket gets ``TCP_NODELAY``: without it multi-write replies wait for Nagle +
  delayed ACK (~40 ms each; measured 23 vs 2,332 keep-alive HTTP requests/s, research/stack.md §1).
- :class:`AddressLimit`: at most ``max_connections_per_address`` open connections from one source
  address per plugin (``[xmpp]``, ``[sip]``, ``[http]``, keys from :func:`connection_limit_options`);
  one more is closed as soon as it is accepted, with a log line at most once a minute. Networks in
  ``connection_limit_exempt`` (default: loopback, where a local reverse proxy connects from) have
  no limit.
- :class:`GuardedServer`, mixed into gevent's StreamServer and WSGIServer: applies the limit, and
  turns an accept that fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) into one log
  line and a pause of 50 ms doubling up to 1 s, instead of gevent's traceback on every attempt.
  The connection waits in the listen backlog meanwhile and is accepted once a descriptor is free.
- :class:`HTTPHandler`: puts the connection's socket in the WSGI environ as ``convergence.socket``
  (an API event stream watches it to notice at once that its client left), and guards against
  slowloris (RFC 9112): the request line and header fields must arrive within ``[http]
  header_timeout`` seconds of the handler starting to wait for them (this also bounds an idle
  keep-alive connection), else 408 (RFC 9110 §15.5.9) and close; a request body within
  ``body_timeout`` seconds (an application may allow a large body more: ``convergence.read_for``
  in the environ). Only reads are bounded: once the application answers (an API event
  stream, say) nothing is timed here. After a ``101 Switching Protocols`` no further request is
  read from the connection: the application, which put a callable in the environ as
  ``convergence.upgraded``, serves its protocol (a WebSocket) on the socket from there, in the
  handler's greenlet once the WSGI call has returned (its request context gone), until it ends.
- :func:`raise_file_limit`: ``serve`` raises the soft RLIMIT_NOFILE to the hard limit at start-up,
  since every connection holds a descriptor.
"""
from __future__ import annotations

import errno
import io
import ipaddress
import logging
import resource
import socket
import time

import gevent
from gevent.pywsgi import WSGIHandler, WSGIServer
from gevent.server import StreamServer

from .config import Option

log = logging.getLogger(__name__)

#: accept() errors that mean "no resources right now", not "this listener is broken".
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = (0.05, 1.0)  # first and longest pause after such an error, in seconds
LOG_INTERVAL = 60.0  # seconds between two log lines about refused connections or accept errors
REQUEST_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                            b"Content-Length: 0\r\n\r\n")


def set_nodelay(sock) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def raise_file_limit() -> None:
    """Raise the soft limit on open files to the hard limit (logged): each connection holds one, and
    the usual soft limit of 1,024 is exhausted by that many idle clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        log.info("open file limit: %d (the hard limit)", soft)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("open file limit: %d; cannot raise it to the hard limit %s: %s", soft, hard, exc)
        return
    log.info("open file limit: raised from %d to %d (the hard limit)", soft, hard)


# ---- configuration -----------------------------------------------------------------------------

def connection_cap(value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("expected a positive integer, or 0 for no limit")
    return value


def networks(value) -> tuple:
    """A list of addresses or CIDR networks (``"127.0.0.0/8"``, ``"::1"``) → ip_network objects."""
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in value)
    except (TypeError, ValueError):
        raise ValueError('expected a list of addresses or networks such as "10.0.0.0/8"') from None


def connection_limit_options(plugin: str) -> dict[str, Option]:
    """The per-address limit keys of a listening plugin's table."""
    return {
        "max_connections_per_address": Option(
            100, f"open {plugin} connections from one source address; one more is closed at once "
                 "(0: no limit)", connection_cap),
        "connection_limit_exempt": Option(
            ["127.0.0.0/8", "::1"], "source addresses or networks without that limit (a reverse "
                                    "proxy, a gateway)", networks),
    }


# ---- the per-address limit ---------------------------------------------------------------------

class LogThrottle:
    """At most one log line per ``interval`` seconds; the next one says how many were left out."""

    def __init__(self, interval: float = LOG_INTERVAL, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self._quiet_until = float("-inf")
        self._left_out = 0

    def log(self, level: int, msg: str, *args) -> None:
        now = self.clock()
        if now < self._quiet_until:
            self._left_out += 1
            return
        if self._left_out:
            msg, args = msg + " (and %d more since the last such line)", (*args, self._left_out)
        self._left_out = 0
        self._quiet_until = now + self.interval
        log.log(level, msg, *args)


class AddressLimit:
    """Counts the open connections of each source address across one plugin's listeners."""

    def __init__(self, name: str, maximum: int, exempt=(), clock=time.monotonic):
        self.name = name  # "XMPP", "SIP", "HTTP": for the log
        self.maximum = maximum  # 0: no limit
        self.exempt = tuple(exempt)
        self.open: dict[str, int] = {}  # source address -> open connections
        self._log = LogThrottle(clock=clock)

    @classmethod
    def from_settings(cls, name: str, settings) -> AddressLimit:
        return cls(name, settings["max_connections_per_address"], settings["connection_limit_exempt"])

    def admit(self, host: str) -> bool:
        """Count a new connection from ``host``; False (not counted) when it is one too many."""
        count = self.open.get(host, 0)
        if self.maximum and count >= self.maximum and not self._exempt(host):
            self._log.log(logging.WARNING, "%s: refused a connection from %s: %d open, the limit "
                          "per address ([%s] max_connections_per_address)", self.name, host, count,
                          self.name.lower())
            return False
        self.open[host] = count + 1
        return True

    def release(self, host: str) -> None:
        """A connection that ``admit`` counted has ended."""
        count = self.open.get(host, 0)
        if count > 1:
            self.open[host] = count - 1
        else:
            self.open.pop(host, None)

    def _exempt(self, host: str) -> bool:
        return address_in(host, self.exempt)


def address_in(host: str, networks) -> bool:
    """Whether the address ``host`` (an IPv4-mapped IPv6 address counts as IPv4) is in one of
    ``networks`` (ip_network objects, as :func:`networks` parses them)."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in network for network in networks)


# ---- the listeners -----------------------------------------------------------------------------

class GuardedServer:
    """Mixin for a gevent StreamServer (or WSGIServer): the :class:`AddressLimit` ``limit`` (None:
    none), and accept errors for want of resources handled with a log line and a pause.

    A connection counts from its accept until ``do_close`` (the handler has returned); a server whose
    handler hands the socket on overrides ``do_close`` and calls :meth:`connection_ended` itself.
    The pause uses gevent's own accept timer (``BaseServer._timer``, cleared by ``stop_accepting``).
    """

    limit: AddressLimit | None = None
    _pause = ACCEPT_PAUSE[0]  # the next pause after an accept error
    _accept_log: LogThrottle | None = None

    def do_read(self):
        try:
            accepted = super().do_read()
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRORS:
                raise
            self._pause_accepting(exc)
            return None
        self._pause = ACCEPT_PAUSE[0]
        return accepted

    def _pause_accepting(self, exc: OSError) -> None:
        pause = self._pause
        if self._accept_log is None:
            self._accept_log = LogThrottle()
        self._accept_log.log(logging.ERROR, "listener %s:%s cannot accept connections: %s "
                             "(accepting again in %.2f s)", *self.address[:2],
                             exc.strerror or exc, pause)
        self.stop_accepting()
        self._timer = self.loop.timer(pause)
        self._timer.start(self._start_accepting_if_started)
        self._pause = min(ACCEPT_PAUSE[1], pause * 2)

    def do_handle(self, sock, address):
        if self.limit is not None and not self.limit.admit(address[0]):
            sock.close()
            return
        super().do_handle(sock, address)

    def do_close(self, sock, address):
        self.connection_ended(address)
        super().do_close(sock, address)

    def connection_ended(self, address) -> None:
        if self.limit is not None:
            self.limit.release(address[0])


class GuardedStreamServer(GuardedServer, StreamServer):
    def __init__(self, listener, handle=None, limit: AddressLimit | None = None):
        super().__init__(listener, handle)
        self.limit = limit


class RequestTimeout(TimeoutError):
    """The client has not sent a request's head or body in the time allowed."""


class _DeadlineReader(io.RawIOBase):
    """The handler's socket as a raw stream whose reads fail with :class:`RequestTimeout` after
    ``deadline`` (a monotonic time; None: no limit) — and every read after that, so the connection
    ends. Only while it reads does a timer run: it cannot interrupt the application."""

    def __init__(self, sock):
        super().__init__()
        self.sock = sock
        self.deadline: float | None = None
        self.expired = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is None and not self.expired:
            return self.sock.recv_into(buffer)
        left = -1.0 if self.expired else self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise RequestTimeout("request timed out")
        try:
            with gevent.Timeout(left, RequestTimeout("request timed out")):
                return self.sock.recv_into(buffer)
        except RequestTimeout:
            self.expired = True
            raise


class HTTPHandler(WSGIHandler):
    """gevent's WSGI handler with TCP_NODELAY and the server's ``header_timeout`` and
    ``body_timeout`` on reading requests (see the module docstring)."""

    def __init__(self, sock, address, server):
        set_nodelay(sock)
        super().__init__(sock, address, server)
        self.rfile.close()  # gevent's makefile(); reads go through the deadline instead
        self._reader = _DeadlineReader(sock)
        self.rfile = io.BufferedReader(self._reader)

    def get_environ(self):
        environ = super().get_environ()
        environ["convergence.socket"] = self.socket  # an event stream watches it for the client leaving
        environ["convergence.read_for"] = self.read_for  # an upload allows for its size
        return environ

    def read_for(self, seconds: float) -> None:
        """Let the application read the rest of the body for ``seconds`` from now instead of what
        is left of ``body_timeout`` (an HTTP File Upload of many megabytes needs longer)."""
        self._reader.deadline = time.monotonic() + seconds

    def read_requestline(self):
        self._reader.deadline = time.monotonic() + self.server.header_timeout
        return super().read_requestline()

    def read_request(self, raw_requestline):
        parsed = super().read_request(raw_requestline)
        self._reader.deadline = time.monotonic() + self.server.body_timeout
        return parsed

    def start_response(self, status, headers, exc_info=None):
        self._reader.deadline = None  # answering: a stream may last (its writes are not timed)
        if status.startswith("101 "):  # the connection now speaks another protocol (a WebSocket):
            self.close_connection = True  # no further HTTP request is read from it
        return super().start_response(status, headers, exc_info)

    def run_application(self):
        try:
            super().run_application()
        finally:  # what the application left of the body is read (and discarded) next
            self._reader.deadline = time.monotonic() + self.server.body_timeout
        upgraded = self.environ.get("convergence.upgraded")
        if upgraded is not None and self.code == 101:
            upgraded()  # the application serves its protocol on the socket until it ends

    def _handle_client_error(self, ex):
        """A request head that did not arrive in time is a 408; a connection lost while reading it
        just ends (gevent would print a traceback for it)."""
        if isinstance(ex, RequestTimeout):
            log.debug("HTTP %s: request head timed out", self.client_address)
            return "408", REQUEST_TIMEOUT_RESPONSE
        if isinstance(ex, OSError):
            return None
        return super()._handle_client_error(ex)


class GuardedWSGIServer(GuardedServer, WSGIServer):
    """gevent's WSGI server with :class:`HTTPHandler`, the per-address limit and the accept guard."""

    handler_class = HTTPHandler

    def __init__(self, listener, application, limit: AddressLimit | None = None,
                 header_timeout: float = 10.0, body_timeout: float = 30.0):
        super().__init__(listener, application, log=None)
        self.limit = limit
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
