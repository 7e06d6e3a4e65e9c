"""What the cluster tests share: the HTTP API call and stanza matchers."""
from __future__ import annotations

import base64
import json
import re
import urllib.request


def available_from(jid: str, kind: str = "available"):
    """Matches a presence from ``jid`` (a prefix: a bare JID matches its resources) of ``kind``."""
    return lambda p: str(p["from"]).startswith(jid) and p["type"] == kind


def chat_body(body: str):
    return lambda m: m["body"] == body


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def api_events(server, name: str, password: str):
    """GET /api/events as ``name``: a generator of (event, data) pairs (docs/http-api.md)."""
    request = urllib.request.Request(f"{server.http_url}/api/events",
                                     headers={"Authorization": basic(name, password)})
    answer = urllib.request.urlopen(request, timeout=10)

    def events():
        with answer:
            kind = None
            for raw in answer:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    yield kind, json.loads(line[6:])
    return events()


def api_send(server, name: str, password: str, to: str, body: str) -> dict:
    """POST /api/messages as ``name`` (docs/http-api.md); the JSON answer."""
    request = urllib.request.Request(
        f"{server.http_url}/api/messages", data=json.dumps({"to": to, "body": body}).encode(),
        headers={"Content-Type": "application/json", "Authorization": basic(name, password)},
        method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def worker_of(server, jid: str) -> str:
    """The worker (``w0``, ``w1``) whose log says the session ``jid`` logged in."""
    line = server.process.wait_for(f"login {jid} ")
    return re.search(r"/(w\d+) INFO", line).group(1)


def on_another_worker(connect, server, home: str, tries: int = 20):
    """``connect(n)`` (a client's n-th try) until the session lands on a worker other than
    ``home``: the kernel picks the worker (SO_REUSEPORT). The clients that landed on ``home`` are
    disconnected."""
    for n in range(tries):
        client = connect(n)
        if worker_of(server, client.jid) != home:
            return client
        client.disconnect()
    raise AssertionError(f"{tries} connections all went to one worker")
