"""SIP test kit: an in-process SIP element on loopback ports, and a raw SIP client.

The server runs on the test's gevent hub (the clients use gevent sockets, so waiting for a reply
lets the server run); its core is there to inspect (bindings, presence, the offline store).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import gevent
import gevent.socket
import gevent.ssl
import pytest

from convergence import credentials
from convergence.testing import free_udp_tcp_port
from convergence.plugins.sip.digest import parse_credentials, response as digest_response
from convergence.plugins.sip.message import (ParseError, Request, Response, StreamParser,
                                             parse_datagram)

DOMAIN = "example.com"  # the RFC 4475 messages' domain


@dataclass
class SipServer:
    core: object
    port: int
    listeners: list
    tls_port: int | None = None
    run_convergence: object = None  # sip_process's: the fixture, for ``cli``

    @property
    def element(self):
        """The running :class:`~convergence.plugins.sip.server.SipServer` of ``core``."""
        return self.core.pm.get_plugin("sip:server")

    def client(self, transport: str = "udp", host: str = "127.0.0.1") -> Client:
        port = self.tls_port if transport == "tls" else self.port
        return Client(("127.0.0.1", port), transport, host)

    def cli(self, *args: str) -> str:
        """Run ``convergence <args>`` on a ``sip_process`` server's configuration."""
        done = self.run_convergence("--config", self.core.config_path, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture
def sip_process(serve, run_convergence):
    """``sip_process(tls=False, **sip_settings)``: a real ``convergence serve`` (gevent
    monkey-patched, as in production) with SIP on free loopback ports and the other listeners
    off; a :class:`SipServer` whose ``core`` is the ``ServerProcess``."""
    def start(tls: bool = False, **settings) -> SipServer:
        port = free_udp_tcp_port()
        tls_port = free_udp_tcp_port() if tls else None
        sip_table = {"listen": f"127.0.0.1:{port}", **settings}
        if tls:
            sip_table["tls_listen"] = f"127.0.0.1:{tls_port}"
        process = serve({"server": {"domain": DOMAIN, "disabled_plugins": ["http", "xmpp"]},
                         "sip": sip_table})
        return SipServer(process, port, [], tls_port, run_convergence)
    return start


@pytest.fixture
def sip_server(make_core):
    """``sip_server(server=None, plugins=None, **sip_settings)``: a started SIP element for
    ``example.com`` with short timers; ``server`` overrides ``[server]``, ``plugins`` are
    registered too (see ``make_core``)."""
    started = []

    def start(server=None, plugins=None, **settings) -> SipServer:
        port = free_udp_tcp_port()
        config = {"server": {"domain": DOMAIN, **(server or {})},
                  "sip": {"listen": f"127.0.0.1:{port}", "t1": 0.05, "t2": 0.4, **settings}}
        core = make_core(config, plugins=plugins)
        listeners = core.pm.get_plugin("sip:server").add_listeners()
        for listener in listeners:
            listener.start()
        started.append(listeners)
        return SipServer(core, port, listeners)

    yield start
    for listeners in started:
        for listener in listeners:
            listener.stop()


class Client:
    """A SIP user agent made of a socket: sends what it is given, parses what comes back."""

    def __init__(self, server, transport="udp", host="127.0.0.1"):
        self.server, self.transport = server, transport
        if transport == "udp":
            self.sock = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
        else:
            self.sock = gevent.socket.create_connection(server, source_address=(host, 0))
            if transport == "tls":
                context = gevent.ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, gevent.ssl.CERT_NONE
                self.sock = context.wrap_socket(self.sock)
            self.parser = StreamParser(1 << 20)
        self.host, self.port = self.sock.getsockname()[:2]
        self.tag = os.urandom(4).hex()
        self.count = 0

    def close(self):
        self.sock.close()

    def send(self, data) -> None:
        data = data if isinstance(data, bytes) else bytes(data)
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def recv(self, timeout: float = 5.0):
        """The next message (parsed), or None on timeout / connection closed."""
        with gevent.Timeout(timeout, False):
            if self.transport == "udp":
                data = self.sock.recvfrom(70000)[0]
                try:
                    return parse_datagram(data)
                except ParseError as err:  # our answer copies the bad header it names
                    _, status, reason = data.split(b"\r\n", 1)[0].decode().split(" ", 2)
                    return Response(int(status), reason, err.headers)
            while True:
                message = self.parser.next_message()
                if message is not None:
                    return message
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.parser.feed(data)
        return None

    def recv_for(self, request, timeout: float = 5.0):
        """The next response to ``request`` (same Call-ID and CSeq), skipping others."""
        with gevent.Timeout(timeout, False):
            while True:
                message = self.recv(timeout)
                if message is None:
                    return None
                if (getattr(message, "status", None) and message.call_id == request.call_id
                        and message.headers.get("CSeq") == request.headers.get("CSeq")):
                    return message
        return None

    def final(self, request, timeout: float = 5.0):
        """The final response to ``request``."""
        while True:
            response = self.recv_for(request, timeout)
            if response is None or response.status >= 200:
                return response

    def request(self, method: str, uri: str = f"sip:{DOMAIN}", user: str = "alice",
                to: str | None = None, call_id: str | None = None, cseq: int | None = None,
                headers=(), body: bytes = b"", branch: str | None = None) -> Request:
        self.count += 1
        request = Request(method, uri)
        via = f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port}"
        request.headers.add("Via", f"{via};branch={branch or 'z9hG4bK' + os.urandom(6).hex()}")
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", f"<sip:{user}@{DOMAIN}>;tag={self.tag}")
        request.headers.add("To", to or f"<sip:{user}@{DOMAIN}>")
        request.headers.add("Call-ID", call_id or f"{self.tag}-{self.count}@{self.host}")
        request.headers.add("CSeq", f"{cseq or self.count} {method}")
        for name, value in headers:
            request.headers.add(name, value)
        request.body = body
        return request

    def ask(self, request, timeout: float = 5.0):
        self.send(request)
        return self.final(request, timeout)

    def authorize(self, request: Request, challenge_response, user: str, password: str,
                  nc: int = 1, algorithm: str | None = None) -> Request:
        """``request`` again (next CSeq, same Call-ID) with digest credentials answering the
        challenge of ``challenge_response`` (401 → Authorization, 407 → Proxy-Authorization)."""
        proxy = challenge_response.status == 407
        challenges = challenge_response.headers.get_all(
            "Proxy-Authenticate" if proxy else "WWW-Authenticate")
        params = next(parse_credentials(c) for c in challenges
                      if algorithm is None or parse_credentials(c)["algorithm"] == algorithm)
        algorithm = params["algorithm"]
        ha1 = credentials.ha1("sha256" if algorithm == "SHA-256" else "md5", user, DOMAIN, password)
        cnonce, nc_text = os.urandom(4).hex(), f"{nc:08x}"
        answer = digest_response(algorithm, ha1, params["nonce"], nc_text, cnonce, "auth",
                                 request.method, request.uri)
        again = Request(request.method, request.uri, type(request.headers)(list(request.headers)),
                        request.body)
        cseq = request.cseq
        again.headers.set("CSeq", f"{cseq.number + 1} {cseq.method}")
        again.headers.pop("Via")
        again.headers.prepend("Via", request.headers.get("Via").rsplit("branch=", 1)[0]
                              + "branch=z9hG4bK" + os.urandom(6).hex())
        again.headers.set("Proxy-Authorization" if proxy else "Authorization",
                          f'Digest username="{user}", realm="{params["realm"]}", '
                          f'nonce="{params["nonce"]}", uri="{request.uri}", response="{answer}", '
                          f'algorithm={algorithm}, qop=auth, nc={nc_text}, cnonce="{cnonce}"')
        return again

    def register(self, user: str, password: str, contact: str | None = None,
                 expires: int | None = 300, headers=()):
        """REGISTER with digest: the final response to the authenticated attempt. ``contact``
        defaults to this client; ``""`` sends none (a query)."""
        if contact is None:
            contact = f"<sip:{user}@{self.host}:{self.port};transport={self.transport}>"
        extra = [("Contact", contact)] if contact != "" else []
        if expires is not None:
            extra.append(("Expires", str(expires)))
        request = self.request("REGISTER", user=user, headers=[*extra, *headers])
        challenge = self.ask(request)
        assert challenge.status == 401, challenge
        return self.ask(self.authorize(request, challenge, user, password))
