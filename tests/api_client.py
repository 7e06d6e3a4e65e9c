"""A plain HTTP client of the API (stdlib ``http.client``) for the scenario tests.

``call(server, method, path, body=None, user=None, token=None, headers=None)`` → :class:`Reply`
(``status``, ``headers``, ``json``): ``body`` is sent as JSON unless it is ``bytes``; ``user`` is a
name of ``server.passwords`` (HTTP Basic), ``token`` a bearer token.

``EventStream(server, user=None, token=None)`` opens ``GET /api/events``; a thread reads the
events into a queue: ``next(name, timeout=5, match=None)`` returns the data (a dict) of the next
event of that name that satisfies ``match``; ``until(name)`` every event up to and including the
next one of that name, as (name, data); comment lines are events named ``"comment"``;
``close()`` drops the connection as a client going away would.
"""
from __future__ import annotations

import base64
import http.client
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    json: object


def credentials(server, user: str | None = None, token: str | None = None) -> dict:
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    if user is not None:
        secret = base64.b64encode(f"{user}:{server.passwords[user]}".encode()).decode()
        return {"Authorization": f"Basic {secret}"}
    return {}


def call(server, method: str, path: str, body=None, user: str | None = None,
         token: str | None = None, headers: dict | None = None) -> Reply:
    headers = {**credentials(server, user, token), **(headers or {})}
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        data = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), data
        return Reply(response.status, response.headers, json.loads(data))
    finally:
        conn.close()


class EventStream:
    END = object()

    def __init__(self, server, user: str | None = None, token: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5)
        self.conn.request("GET", "/api/events", headers=credentials(server, user, token))
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.events: queue.Queue = queue.Queue()
        if self.status == 200:
            assert self.response.getheader("Content-Type").startswith("text/event-stream")
            self.conn.sock.settimeout(None)  # the reader thread blocks; tests wait on the queue
            threading.Thread(target=self._read, daemon=True).start()
            self.announced = self.next("stream")

    def _read(self) -> None:
        name, data = None, []
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.events.put(("comment", line))
                elif line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: "):
                    data.append(line[len("data: "):])
                elif not line and name:
                    self.events.put((name, json.loads("\n".join(data))))
                    name, data = None, []
        except Exception:  # noqa: BLE001 - the test closed the connection under the reader
            pass
        self.events.put((self.END, None))

    @property
    def id(self) -> str:
        return self.announced["stream"]

    @property
    def jid(self) -> str:
        return self.announced["jid"]

    def next(self, name: str, timeout: float = 5, match=None):
        deadline = time.monotonic() + timeout
        while True:
            got, data = self._get(deadline, name)
            if got == name and (match is None or match(data)):
                return data

    def until(self, name: str, timeout: float = 5) -> list:
        """Every event up to and including the next one named ``name``: [(name, data)]."""
        received = []
        while not received or received[-1][0] != name:
            received.append(self._get(time.monotonic() + timeout, name))
        return received

    def _get(self, deadline: float, waiting_for: str):
        try:
            got, data = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {waiting_for!r} event in time") from None
        if got is self.END:
            raise AssertionError(f"the stream ended before a {waiting_for!r} event")
        return got, data

    def close(self) -> None:
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
