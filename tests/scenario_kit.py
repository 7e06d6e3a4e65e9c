"""The clients and servers of the scenario tests (their fixtures are in tests/conftest.py).

Fixtures for scenario tests: a real ``convergence serve``, its accounts, slixmpp clients.

``convergence_server(accounts=None, **sections)`` — the same server as ``xmpp_server`` with every
  table overridable (``http={...}``, ``sip={...}``, ``server={...}``); ``http_port``,
  ``http_url`` and ``sip_port`` (UDP and TCP) name its other listeners; ``restart()`` stops it
  and starts it again on the same data.

``xmpp_server(accounts=None, **xmpp)`` — starts a server for domain ``example.org`` with
  ``[xmpp] listen`` on a free loopback port and federation off (``s2s_listen = ""``); ``xmpp``
  keys override the ``[xmpp]`` table (use small timeouts, e.g. ``ping_interval=0.5``; ``tls_listen=True`` picks a free port for Direct
  TLS). ``accounts`` (name → password) are created in its database *before* it starts, so they
  exist for the shared roster. Returns an :class:`XmppServer`: ``domain``, ``port``,
  ``tls_port``, ``cert`` (the generated certificate, for clients to trust), ``jid(name,
  resource=None)``, ``add_account(name, password)`` (while running, the server hears of it
  through the control path, as of ``convergence user add``), ``process`` (``.output`` is the
  server log, ``wait_for(text)``, ``.stop()``).

``xmpp_client(server, name, password=None, resource="test", mechanism=None, presence=True,
  roster=False, direct_tls=False, timeout=10)`` — a slixmpp client logged in over STARTTLS (or
  Direct TLS), trusting the server's certificate, with ``session_start`` seen. ``password``
  defaults to the one given to ``xmpp_server``; ``mechanism`` restricts SASL (``"PLAIN"``,
  ``"SCRAM-SHA-1"``…); ``roster=True`` fetches the roster and ``presence=True`` then sends initial
  presence, like a normal client. Returns a :class:`Client`. Login failures raise
  ``LoginFailed`` (a ConnectionError). All clients are disconnected and their event loop stopped after the test.

:class:`Client`: ``jid`` (the bound full JID), ``xmpp`` (the ``slixmpp.ClientXMPP``; touch it only
through ``call``), ``call(fn, *args)`` (runs ``fn(*args)`` on the client's loop, awaits it if it
returns an awaitable, returns the result), ``send_message(to, body, type="chat", **fields)``,
``next(event, timeout=5, match=None)`` (the next slixmpp event of that name, e.g. ``"message"``,
``"presence"``, ``"roster_update"``, ``"carbon_received"``, that satisfies ``match``; events are
queued from the start for the names in ``Client.WATCHED`` and from the first ``watch``/``next`` call
for others), ``none(event, wait)`` (asserts no such event arrives within ``wait`` seconds),
``disconnect()``.

``raw_client(server)`` — a :class:`RawClient` on a plain socket that says exactly the bytes a test
gives it: ``send(bytes)``, ``open()`` (header, wait for features), ``login(name, password,
resource="raw")`` (STARTTLS trusting the server's certificate, PLAIN, bind; ``bound`` is then the
full JID), ``next(tag)`` (the
next element whose tag ends with ``tag``), ``read(until, timeout)`` (events until one satisfies
``until``), ``stream_error()`` (the condition of the stream error the server sends, asserting the
connection then closes).
"""
from __future__ import annotations

import asyncio
import base64
import inspect
import queue
import socket
import ssl
import threading
import time
from pathlib import Path

import slixmpp

from convergence.config import load
from convergence.core import Core
from convergence.plugins.xmpp.stream import Stanza, StreamClose, StreamParser
from convergence.testing import free_port, free_udp_tcp_port

DOMAIN = "example.org"


class LoginFailed(ConnectionError):
    pass


class Loop:
    """An asyncio loop in a thread of its own, for the clients of one test."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, fn, *args, timeout: float = 10):
        async def call():
            result = fn(*args)
            return await result if inspect.isawaitable(result) else result
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def stop(self):
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.run(cancel_all)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Client:
    WATCHED = ("message", "message_error", "presence", "roster_update", "carbon_received",
               "carbon_sent", "disconnected", "stream_error")

    def __init__(self, loop: Loop, xmpp: slixmpp.ClientXMPP):
        self.loop = loop
        self.xmpp = xmpp
        self.queues: dict[str, queue.Queue] = {}
        for name in self.WATCHED:
            self._watch(name)

    @property
    def jid(self) -> str:
        return str(self.xmpp.boundjid)

    def call(self, fn, *args, timeout: float = 10):
        return self.loop.run(fn, *args, timeout=timeout)

    def _watch(self, name: str) -> queue.Queue:  # on the loop thread or before connecting
        if name not in self.queues:
            self.queues[name] = queue.Queue()
            self.xmpp.add_event_handler(name, self.queues[name].put)
        return self.queues[name]

    def watch(self, name: str) -> queue.Queue:
        return self.call(self._watch, name)

    def next(self, event: str, timeout: float = 5, match=None):
        q = self.queues.get(event) or self.watch(event)
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.jid}: no {event!r} event within {timeout}s") from None
            if match is None or match(item):
                return item

    def none(self, event: str, wait: float = 0.5) -> None:
        q = self.queues.get(event) or self.watch(event)
        try:
            item = q.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"{self.jid}: unexpected {event!r}: {item}")

    def send_message(self, to: str, body: str, type: str = "chat", **fields) -> None:
        def send():
            message = self.xmpp.make_message(mto=to, mbody=body, mtype=type)
            for key, value in fields.items():
                message[key] = value
            message.send()
        self.call(send)

    def disconnect(self) -> None:
        if self.xmpp.is_connected():
            self.call(lambda: self.xmpp.disconnect(wait=1.0))


class XmppServer:
    """A real server with every listener on a free loopback port; ``sections`` override tables."""

    def __init__(self, serve, tmp_path: Path, database_url: str, accounts: dict, sections: dict):
        self.domain = DOMAIN
        self.port = free_port()
        xmpp = dict(sections.get("xmpp", {}))
        self.tls_port = free_port() if xmpp.pop("tls_listen", False) else None
        self.http_port = free_port()
        self.sip_port = free_udp_tcp_port()
        data = tmp_path / "data"
        self.cert = data / "tls" / f"{DOMAIN}.crt"
        self.config = {
            **sections,
            "server": {"domain": DOMAIN, "data_dir": str(data), "database": database_url,
                       **sections.get("server", {})},
            "xmpp": {"listen": f"127.0.0.1:{self.port}", "s2s_listen": "", **xmpp,
                     **({"tls_listen": f"127.0.0.1:{self.tls_port}"} if self.tls_port else {})},
            "http": {"listen": f"127.0.0.1:{self.http_port}", **sections.get("http", {})},
            "sip": {"listen": f"127.0.0.1:{self.sip_port}", **sections.get("sip", {})},
        }
        self.passwords = dict(accounts)
        self._core = Core.create(load(None, self.config))
        self._core.db.upgrade()
        for name, password in accounts.items():
            self._core.add_account(name, password)
        self._serve = serve
        self.process = serve(self.config)

    def restart(self) -> None:
        """Stop the server (SIGTERM, clean exit) and start it again on the same data and ports."""
        assert self.process.stop() == 0, "".join(self.process.output)
        self.process = self._serve(self.config)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def jid(self, name: str, resource: str | None = None) -> str:
        return f"{name}@{self.domain}" + (f"/{resource}" if resource else "")

    def add_account(self, name: str, password: str) -> str:
        self._core.add_account(name, password)
        self.passwords[name] = password
        return self.jid(name)

    def close(self):
        self._core.close()


class RawClient:
    """A hand-written client on a plain socket: it says exactly the bytes a test gives it."""

    HEADER = (b"<?xml version='1.0'?><stream:stream to='example.org' version='1.0' "
              b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

    def __init__(self, server):
        self.server = server
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.parser = StreamParser(10 ** 7)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, until, timeout: float = 5) -> list:
        """Events until ``until(event)`` is true for one of them (or the server closes)."""
        events, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            events += [e.element if isinstance(e, Stanza) else e for e in self.parser.feed(data)]
            if any(until(e) for e in events):
                break
        return events

    def stream_error(self, timeout: float = 5) -> str:
        """The condition of the stream error the server sends; the connection must then close."""
        events = self.read(lambda e: isinstance(e, StreamClose), timeout)
        assert isinstance(events[-1], StreamClose), events
        [error] = [e for e in events if getattr(e, "tag", "") == "{http://etherx.jabber.org/streams}error"]
        self.sock.settimeout(5)
        assert self.sock.recv(1) == b""  # and the server closed the connection
        return error[0].tag.split("}")[1]

    def next(self, tag: str) -> object:
        events = self.read(lambda e: getattr(e, "tag", "").endswith(tag))
        return next(e for e in events if getattr(e, "tag", "").endswith(tag))

    def open(self) -> None:
        self.send(self.HEADER)
        self.next("features")

    def login(self, name: str, password: str, resource: str = "raw") -> None:
        self.open()
        self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.next("proceed")
        context = ssl.create_default_context(cafile=str(self.server.cert))
        self.sock = context.wrap_socket(self.sock, server_hostname=self.server.domain)
        self.parser.reset()
        self.open()
        self.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                  % base64.b64encode(f"\0{name}\0{password}".encode()))
        self.next("success")
        self.parser.reset()
        self.open()
        self.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  b"<resource>%s</resource></bind></iq>" % resource.encode())
        self.bound = self.next("iq").findtext(
            "{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid")
