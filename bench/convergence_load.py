"""Cross-protocol load on one ``convergence serve``: SIP→XMPP and XMPP→SIP relays/s and latency,
HTTP API sends/s.

Run (from a checkout, with the project installed in the virtualenv):

    .venv/bin/python bench/convergence_load.py            # ~3 min
    .venv/bin/python bench/convergence_load.py --quick    # ~25 s smoke run
    .venv/bin/python bench/convergence_load.py --only sip --rates 1000,1500,2000 --duration 10

One server (``convergence serve``, gevent, SQLite, started as ``xmpp_load.py`` starts it, with
the accounts ``user0``… of the domain ``localhost``), one load-generator process (gevent, raw
sockets, so that it stays cheap beside the server on a 2-core machine):

- ``--xmpp-clients`` XMPP clients (``xmpp_load.py``'s: STARTTLS, SCRAM-SHA-1, bind, presence);
- ``--sip-uas`` SIP user agents, each on its own UDP port, registered with digest auth. A UA
  answers the first challenge and then reuses the nonce with a rising nonce count (RFC 7616 §3.4),
  as phones do, so a MESSAGE costs the server one request, not a 407 round trip (``sip_load.py``
  measures that one); it answers each MESSAGE it receives with ``200``.

SIP→XMPP and XMPP→SIP are measured one after the other, open loop: messages leave at a fixed rate
whatever the server does, the n-th at start + n/rate. The body carries a step number, a sequence
number and the send time (``time.monotonic``), so the receiver counts each message once and
measures its latency.

1. **SIP→XMPP**: the UAs send MESSAGE (digest-authenticated as their From account) to the XMPP
   users, round-robin; counted where the XMPP clients receive them (and each 200 counted at the UA).
2. **XMPP→SIP**: the XMPP clients send chat messages to the UAs' accounts, whose only endpoint is
   the SIP binding; counted where the UAs receive the MESSAGE.

For each: steps at increasing ``--rates`` of ``--duration`` s each until a step loses a message,
gets an error, delivers below 95 % of its rate or has a p99 of 500 ms or more (SIP's T1, after
which UDP senders resend: the server fell behind); the maximum is the best passing step. Then a
latency run of ``--latency-duration`` s at half that maximum: p50/p99.

3. **HTTP→XMPP**: ``--http-connections`` keep-alive connections POST ``/api/messages`` (bearer
   token from ``convergence token create``) to the XMPP users, each with one request in flight
   (closed loop), ``--http-messages`` in all: sends/s answered 200, answer and delivery latency.

Every step prints the server's CPU seconds per 1,000 messages and how busy the server and the load
generator were (``/proc/PID/stat``), so one can judge whether the generator stayed out of the way.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent import socket as gsocket
from gevent.event import Event

from sip_load import answers_register, free_udp_port
from xmpp_load import (DOMAIN, PASSWORD, ClientProcess, ProtocolError, convergence_config, cpu_seconds,
                       environment, free_port, make_certificate, serving, setup_convergence)

TARGET_RATE, TARGET_P99_MS = 2000, 50  # the issue's: relay ≥ 2,000/s, p99 < 50 ms at half that rate
MIN_RATE_KEPT = 0.95  # a step whose delivered rate stays below this share of its target is saturated,
MAX_P99 = 0.5  # and so is one whose p99 reaches SIP's T1 (RFC 3261 §17.1.2.2: UDP senders resend)
DIRECTIONS = {"sip": "SIP→XMPP", "xmpp": "XMPP→SIP", "http": "HTTP→XMPP"}

# ---- the load generator (runs in a worker process) -----------------------------------------------

STAMPED = re.compile(rb"<body>(\d+) (\d+) ([0-9.]+)</body>")  # step, sequence number, send time
STANZA_END = b"</message>"
ECHOED = frozenset({b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"})
CHALLENGE = re.compile(rb"\r\n(?:WWW|Proxy)-Authenticate: *Digest ([^\r]*)", re.I)
NONCE = re.compile(rb'nonce="([^"]+)"')
ALGORITHM = re.compile(rb"algorithm=([A-Za-z0-9-]+)")
CONTENT_LENGTH = re.compile(rb"\r\nContent-Length: *(\d+)", re.I)
CALL_ID = re.compile(rb"\r\n(?:Call-ID|i): *(\d+)\.(\d+)\.", re.I)
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}  # RFC 8760 §2.1
CNONCE = "bench"
TICK = 0.002  # the sender wakes at most every 2 ms and sends what is due (a few at a time)


class Step:
    """What one measured step has seen so far: each sequence number once, with its latency."""

    def __init__(self, number: int, count: int, responses: int):
        self.number, self.count, self.responses = number, count, responses
        self.stamps = [0.0] * count  # send times, for a MESSAGE sent again after a new challenge
        self.seen = bytearray(count)
        self.latencies: list[float] = []
        self.last = 0.0  # when the last new message arrived
        self.duplicates = self.errors = self.answered = self.challenged = 0
        self.statuses: dict[int, int] = {}  # SIP final responses other than 200
        self.done = Event()

    def arrived(self, seq: int, stamp: float, now: float) -> None:
        if self.seen[seq]:
            self.duplicates += 1
            return
        self.seen[seq] = 1
        self.latencies.append(now - stamp)
        self.last = now
        self.check()

    def failed(self, status: int) -> None:
        """A response other than 200 (SIP or HTTP)."""
        self.errors += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.check()

    def check(self) -> None:
        if len(self.latencies) == self.count and self.answered + self.errors >= self.responses:
            self.done.set()

    def report(self, sent_at: float, **more) -> dict:
        return {"received": len(self.latencies), "latencies": self.latencies, "last": self.last,
                "sent_at": sent_at, "duplicates": self.duplicates, "errors": self.errors,
                "answered": self.answered, "challenged": self.challenged, "statuses": self.statuses,
                **more}


class SipUa:
    """A SIP user agent on its own UDP port (RFC 3261): REGISTERs with digest, sends MESSAGE
    (RFC 3428) with the credentials of its last challenge, answers MESSAGE with 200."""

    def __init__(self, name: str, server: tuple[str, int], owner: CrossClients):
        self.name, self.server, self.owner = name, server, owner
        self.sock = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.uri = f"sip:{name}@{DOMAIN}"
        self.algorithm = self.nonce = self.ha1 = ""
        self.nc = 0

    def challenged(self, response: bytes) -> None:
        """Take the first challenge of a 401/407 (§22.2, §22.3): its algorithm and nonce."""
        params = CHALLENGE.search(response).group(1)
        self.algorithm = ALGORITHM.search(params).group(1).decode().upper()
        self.nonce, self.nc = NONCE.search(params).group(1).decode(), 0
        self.ha1 = HASHES[self.algorithm](f"{self.name}:{DOMAIN}:{PASSWORD}".encode()).hexdigest()

    def credentials(self, method: str, uri: str) -> str:
        """RFC 7616 §3.4 with qop=auth, the next nonce count on the cached nonce."""
        self.nc += 1
        h, nc = HASHES[self.algorithm], f"{self.nc:08x}"
        ha2 = h(f"{method}:{uri}".encode()).hexdigest()
        response = h(f"{self.ha1}:{self.nonce}:{nc}:{CNONCE}:auth:{ha2}".encode()).hexdigest()
        return (f'Digest username="{self.name}", realm="{DOMAIN}", nonce="{self.nonce}", uri="{uri}", '
                f'response="{response}", algorithm={self.algorithm}, qop=auth, nc={nc}, cnonce="{CNONCE}"')

    def register(self) -> None:
        """REGISTER; on 401 again with credentials; expect 200 (§10.2)."""
        def request(cseq: int, auth: str) -> bytes:
            return (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK.r{cseq}.{self.name};rport\r\n"
                    f"Max-Forwards: 70\r\nFrom: <{self.uri}>;tag={self.name}\r\nTo: <{self.uri}>\r\n"
                    f"Call-ID: reg.{self.name}\r\nCSeq: {cseq} REGISTER\r\n"
                    f"Contact: <sip:{self.name}@127.0.0.1:{self.port}>\r\nExpires: 3600\r\n"
                    f"{auth}Content-Length: 0\r\n\r\n").encode()

        self.sock.settimeout(10)
        self.sock.sendto(request(1, ""), self.server)
        answer = self.sock.recv(65535)
        if answer.startswith(b"SIP/2.0 401"):
            self.challenged(answer)
            auth = f"Authorization: {self.credentials('REGISTER', f'sip:{DOMAIN}')}\r\n"
            self.sock.sendto(request(2, auth), self.server)
            answer = self.sock.recv(65535)
        if not answer.startswith(b"SIP/2.0 200"):
            raise ProtocolError(f"{self.name}: REGISTER answered {answer[:200]!r}")
        self.sock.settimeout(None)

    def message(self, to: str, step: int, seq: int, stamp: float, cseq: int = 1) -> None:
        uri = f"sip:{to}@{DOMAIN}"
        body = f"{step} {seq} {stamp!r}"
        self.sock.sendto((
            f"MESSAGE {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK.{step}.{seq}.{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <{self.uri}>;tag={self.name}\r\nTo: <{uri}>\r\n"
            f"Call-ID: {step}.{seq}.{self.name}\r\nCSeq: {cseq} MESSAGE\r\nContent-Type: text/plain\r\n"
            f"Proxy-Authorization: {self.credentials('MESSAGE', uri)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode(), self.server)

    def run(self) -> None:
        """Read forever: responses to our MESSAGEs, and MESSAGEs to answer (§8.2.6) and count."""
        while True:
            data, source = self.sock.recvfrom(65535)
            if data.startswith(b"SIP/2.0 "):
                self.owner.response(self, data)
            elif data.startswith(b"MESSAGE "):
                head, _, body = data.partition(b"\r\n\r\n")
                named = [(line.partition(b":")[0].strip().lower(), line)
                         for line in head.split(b"\r\n")[1:]]
                lines = [line + b";tag=ua" if name in (b"to", b"t") else line  # §8.2.6.2: the
                         for name, line in named if name in ECHOED]  # UAS tags To
                self.sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(lines)
                                 + b"\r\nContent-Length: 0\r\n\r\n", source)
                self.owner.body(body, time.monotonic())


def http_response(sock, buf: bytes) -> tuple[int, bytes, bytes]:
    """Read one HTTP/1.1 response with a Content-Length (as the API's JSON answers have):
    (status, body, the bytes after it)."""
    def more() -> bytes:
        if data := sock.recv(65536):
            return data
        raise ProtocolError("the server closed an HTTP connection")

    while (end := buf.find(b"\r\n\r\n")) < 0:
        buf += more()
    length = int(CONTENT_LENGTH.search(buf, 0, end).group(1))
    while len(buf) < end + 4 + length:
        buf += more()
    return int(buf[9:12]), buf[end + 4:end + 4 + length], buf[end + 4 + length:]


class CrossClients(ClientProcess):
    """The load generator's process: ``login`` (inherited) logs the XMPP clients in, ``register``
    the SIP UAs, ``relay`` runs one measured step."""

    def __init__(self, address):
        super().__init__(address)
        self.uas: list[SipUa] = []
        self.step: Step | None = None

    def register(self, sip_port: int, names: list[str]) -> None:
        self.uas = [SipUa(name, ("127.0.0.1", sip_port), self) for name in names]
        gevent.joinall([gevent.spawn(ua.register) for ua in self.uas], raise_error=True)
        for ua in self.uas:
            gevent.spawn(ua.run)
        for client in self.clients:
            gevent.spawn(self.read_xmpp, client)

    def read_xmpp(self, client) -> None:
        """Count the stamped messages a client receives; count error stanzas apart."""
        buf = client.buf
        client.sock.settimeout(None)  # the login's timeout would cost a timer per read
        while data := client.sock.recv(65536):
            buf += data
            end = buf.rfind(STANZA_END) + len(STANZA_END)
            if end < len(STANZA_END):
                continue
            now, chunk, buf = time.monotonic(), buf[:end], buf[end:]
            if b"error" in chunk:  # look at each stanza: an error stanza may quote the message
                stanzas = chunk.split(STANZA_END)
                errors = [s for s in stanzas if b"type='error'" in s or b'type="error"' in s]
                if errors and self.step:
                    self.step.errors += len(errors)
                    print(f"{client.name}: error stanza {errors[0][:300]!r}", flush=True)
                    self.step.check()
                chunk = b"".join(s for s in stanzas if s not in errors)
            for match in STAMPED.finditer(chunk):
                self.body_parts(match.groups(), now)
        raise ProtocolError(f"{client.name}: the server closed the connection")

    def body(self, body: bytes, now: float) -> None:
        self.body_parts(body.split(b" "), now)

    def body_parts(self, parts, now: float) -> None:
        step, seq, stamp = parts
        if self.step and int(step) == self.step.number:  # a late one of an earlier step: ignored
            self.step.arrived(int(seq), float(stamp), now)

    def response(self, ua: SipUa, data: bytes) -> None:
        """A final response to one of our MESSAGEs: 200 counts; a challenge for a stale nonce
        (RFC 7616 §3.3) sends the message again with fresh credentials; anything else is an error."""
        status = int(data[8:11])
        match = CALL_ID.search(data)
        step = self.step
        if status < 200 or not match or not step or int(match.group(1)) != step.number:
            return
        if status in (401, 407) and b"stale=true" in data:
            step.challenged += 1
            ua.challenged(data)
            seq = int(match.group(2))
            ua.message(self.xmpp_user(seq), step.number, seq, step.stamps[seq], cseq=2)
        elif status == 200:
            step.answered += 1
            step.check()
        else:
            step.failed(status)

    def http(self, port: int, token: str, connections: int, number: int, count: int, start: float,
             drain: float) -> dict:
        """``count`` POST /api/messages to the XMPP users over ``connections`` keep-alive
        connections, each with one request in flight (closed loop)."""
        step = self.step = Step(number, count, count)
        head = (f"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n")
        seqs, answers = iter(range(count)), []

        def connection():
            sock = gsocket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            for seq in seqs:  # shared by the connections: each takes the next number
                stamp = time.monotonic()
                body = (f'{{"to": "{self.xmpp_user(seq)}@{DOMAIN}", '
                        f'"body": "{number} {seq} {stamp!r}"}}').encode()
                sock.sendall((head % len(body)).encode() + body)
                status, answer, buf = http_response(sock, buf)
                answers.append(time.monotonic() - stamp)
                if status == 200:
                    step.answered += 1
                    step.check()
                else:
                    print(f"HTTP {status}: {answer[:300]!r}", flush=True)
                    step.failed(status)
            sock.close()

        gevent.sleep(max(0.0, start - time.monotonic()))
        gevent.joinall([gevent.spawn(connection) for _ in range(connections)], raise_error=True)
        answered_at = time.monotonic()
        step.done.wait(drain)
        self.step = None
        return step.report(answered_at, answers=answers)

    def xmpp_user(self, seq: int) -> str:
        return self.clients[seq % len(self.clients)].name

    def relay(self, direction: str, number: int, rate: float, count: int, start: float,
              drain: float) -> dict:
        """One step: ``count`` messages at ``rate``/s from ``start`` (open loop); wait for them
        at most ``drain`` s after the last one left."""
        step = self.step = Step(number, count, count if direction == "sip" else 0)
        clients, uas = self.clients, self.uas
        if direction == "sip":
            def send(seq, stamp):
                uas[seq % len(uas)].message(self.xmpp_user(seq), number, seq, stamp)
        else:
            def send(seq, stamp):
                to = uas[seq % len(uas)].name
                clients[seq % len(clients)].sock.sendall(
                    f"<message to='{to}@{DOMAIN}' type='chat'><body>{number} {seq} {stamp!r}"
                    "</body></message>".encode())
        sent = 0
        while sent < count:
            due = min(count, int((time.monotonic() - start) * rate) + 1)
            while sent < due:
                step.stamps[sent] = stamp = time.monotonic()
                send(sent, stamp)
                sent += 1
            gevent.sleep(max(TICK, start + sent / rate - time.monotonic()))
        sent_at = time.monotonic()
        step.done.wait(drain)
        self.step = None
        return step.report(sent_at)


# ---- measuring (the parent process) ---------------------------------------------------------------

@dataclass
class Result:
    direction: str
    target: float  # messages/s (open loop); 0 for the closed-loop HTTP run
    count: int
    received: int
    seconds: float  # from the first send to the last arrival
    send_seconds: float  # from the first send to the last (HTTP: to the last answer)
    server_cpu: float
    generator_cpu: float
    wall: float
    latencies: list[float] = field(repr=False)
    duplicates: int = 0
    errors: int = 0
    statuses: dict = field(default_factory=dict)
    answered: int | None = None  # SIP→XMPP: the UAs' 200s; HTTP: the 200s
    answers: list[float] = field(default_factory=list, repr=False)  # HTTP: response times
    challenged: int = 0  # SIP→XMPP: MESSAGEs sent again after a new challenge (a stale nonce)

    @property
    def lost(self) -> int:
        return self.count - self.received

    @property
    def rate(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    @property
    def saturated(self) -> bool:
        return self.rate < MIN_RATE_KEPT * self.target or self.percentile(0.99) >= 1e3 * MAX_P99

    @property
    def passed(self) -> bool:
        return not self.lost and not self.errors and not self.saturated

    def percentile(self, p: float, values: list[float] | None = None) -> float:
        ordered = sorted(self.latencies if values is None else values)
        return 1e3 * ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.server_cpu / self.received if self.received else float("nan")

    def line(self) -> str:
        answered = f", {self.answered} {'SIP' if self.direction == 'sip' else 'HTTP'} 200s" \
            if self.answered is not None else ""
        other = "".join(f", {n}×{status}" for status, n in sorted(self.statuses.items())) + (
            f", {self.challenged} sent again on a new challenge" if self.challenged else "")
        pace = self.count / self.send_seconds if self.send_seconds else 0.0
        slow = (f" (generator sent at {pace:,.0f}/s)" if self.target and pace < MIN_RATE_KEPT * self.target
                else "")
        answers = (f"; HTTP answer p50 {self.percentile(0.5, self.answers):.1f} ms, p99 "
                   f"{self.percentile(0.99, self.answers):.1f} ms" if self.answers else "")
        verdict = "LOST" if self.lost or self.errors else "saturated" if self.saturated else "ok"
        return (f"{self.received:>7} of {self.count:>7} arrived ({self.lost} lost, {self.duplicates} "
                f"twice, {self.errors} errors{answered}{other}), {self.rate:>6,.0f}/s{slow}, "
                f"p50 {self.percentile(0.5):6.1f} ms, p99 {self.percentile(0.99):6.1f} ms{answers}; "
                f"server {self.cpu_per_1000:.3f} CPU s/1000 msgs, {self.busy(self.server_cpu):3.0f} % "
                f"busy; generator {self.busy(self.generator_cpu):3.0f} % busy"
                + (f"  {verdict}" if self.target else ""))

    def busy(self, cpu: float) -> float:
        return 100 * cpu / self.wall


class Bench:
    """Runs steps on the server ``proc`` through the generator in ``workers``."""

    def __init__(self, proc, workers, drain: float):
        self.proc, self.workers, self.drain, self.steps = proc, workers, drain, 0

    def measure(self, label: str, target: float, count: int, command: str, **kwargs) -> Result:
        """Run ``command`` in the generator as a new step (``label``: a key of DIRECTIONS); CPU
        times of both sides around it."""
        self.steps += 1
        generator = self.workers.procs[0].pid
        server_cpu, generator_cpu = cpu_seconds(self.proc.pid), cpu_seconds(generator)
        start = time.monotonic() + 0.2
        [r] = self.workers.run(command, lambda i: {
            "number": self.steps, "count": count, "start": start, "drain": self.drain, **kwargs})
        wall = time.monotonic() - start
        return Result(label, target, count, r["received"], (r["last"] or start) - start,
                      r["sent_at"] - start, cpu_seconds(self.proc.pid) - server_cpu,
                      cpu_seconds(generator) - generator_cpu, wall, r["latencies"], r["duplicates"],
                      r["errors"], r["statuses"], r["answered"] if label != "xmpp" else None,
                      r.get("answers", []), r["challenged"])

    def step(self, direction: str, rate: float, seconds: float) -> Result:
        return self.measure(direction, rate, max(1, int(rate * seconds)), "relay",
                            direction=direction, rate=rate)

    def direction(self, direction: str, rates: list[int], seconds: float,
                  latency_seconds: float) -> tuple[Result | None, Result | None]:
        """Steps up the rates to the best passing one, then the latency run at half its rate."""
        label, best = DIRECTIONS[direction], None
        self.step(direction, 200, 0.5)  # warm-up: caches, first nonces, greenlets
        for rate in rates:
            result = self.step(direction, rate, seconds)
            print(f"  {label} {rate:>6}/s: {result.line()}", flush=True)
            if result.passed:
                best = result if best is None or result.rate > best.rate else best
            else:
                break
        self.settle()
        if best is None:
            return None, None
        half = best.rate / 2
        latency = self.step(direction, half, latency_seconds)
        print(f"  {label} latency run at {half:,.0f}/s: {latency.line()}", flush=True)
        self.settle()
        return best, latency

    def http(self, port: int, token: str, connections: int, count: int) -> Result:
        """Closed loop: ``count`` API sends over ``connections`` keep-alive connections."""
        self.measure("http", 0, min(count, 100), "http", port=port, token=token,
                     connections=connections)  # warm-up
        result = self.measure("http", 0, count, "http", port=port, token=token,
                              connections=connections)
        print(f"  {DIRECTIONS['http']} {connections} connections: {result.line()}", flush=True)
        return result

    def settle(self, quiet: float = 0.2) -> None:
        """Wait until the server has worked off what a step left queued (its CPU stays nearly
        idle for ``quiet`` s; at most 30 s)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            before = cpu_seconds(self.proc.pid)
            time.sleep(quiet)
            if cpu_seconds(self.proc.pid) - before < quiet / 10:
                return


def summary(results: dict[str, tuple[Result | None, Result | None]], http: Result | None,
            rates: list[int]) -> None:
    labels = list(results)

    def row(name, value):
        print(f"{name:<44}" + "".join(f"{value(*results[d]):>14}" for d in labels))

    def maximum(best, _):
        if best is None:
            return "none passed"
        return ("≥ " if best.target == rates[-1] else "") + f"{best.rate:,.0f}"

    if results:
        print(f"\n{'':<44}" + "".join(f"{DIRECTIONS[d]:>14}" for d in labels))
        row("max sustained relays/s (no loss)", maximum)
        row("server CPU s per 1000 msgs at that rate",
            lambda b, _: f"{b.cpu_per_1000:.3f}" if b else "–")
        row("generator CPU busy at that rate",
            lambda b, _: f"{b.busy(b.generator_cpu):.0f} %" if b else "–")
        row("latency run: rate/s", lambda _, lat: f"{lat.rate:,.0f}" if lat else "–")
        row("latency run: p50 / p99 ms", lambda _, lat: f"{lat.percentile(0.5):.1f} / "
            f"{lat.percentile(0.99):.1f}" if lat else "–")
        row("latency run: lost", lambda _, lat: f"{lat.lost}" if lat else "–")
        row("latency run: server CPU s per 1000 msgs",
            lambda _, lat: f"{lat.cpu_per_1000:.3f}" if lat else "–")
        row("latency run: generator CPU busy",
            lambda _, lat: f"{lat.busy(lat.generator_cpu):.0f} %" if lat else "–")
        row(f"target: ≥ {TARGET_RATE:,}/s, p99 < {TARGET_P99_MS} ms", lambda b, lat: (
            "met" if b and lat and b.rate >= TARGET_RATE and lat.percentile(0.99) < TARGET_P99_MS
            and not lat.lost else "NOT met"))
        if any(b and b.target == rates[-1] for b, _ in results.values()):
            print("≥: the highest step passed; add higher --rates to find the limit")
    if http:
        print(f"\nHTTP API (POST /api/messages, bearer token, {http.count} sends, closed loop): "
              f"{http.answered / http.send_seconds:,.0f} sends/s answered 200, {http.received} "
              f"delivered to XMPP, answer p50/p99 {http.percentile(0.5, http.answers):.1f} / "
              f"{http.percentile(0.99, http.answers):.1f} ms, delivery p50/p99 "
              f"{http.percentile(0.5):.1f} / {http.percentile(0.99):.1f} ms; server "
              f"{http.cpu_per_1000:.3f} CPU s/1000 msgs ({http.busy(http.server_cpu):.0f} % busy), "
              f"generator {http.busy(http.generator_cpu):.0f} % busy")


def create_token(tmp: Path, user: str) -> str:
    """``convergence token create USER`` against the running server's configuration."""
    done = subprocess.run([str(Path(sys.executable).parent / "convergence"), "--config",
                           str(tmp / "convergence.toml"), "token", "create", user],
                          capture_output=True, text=True, cwd=tmp, env=environment())
    if done.returncode:
        raise RuntimeError(f"convergence token create {user} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def main() -> int:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--only", choices=list(DIRECTIONS), help="measure one direction only")
    parser.add_argument("--xmpp-clients", type=int, default=50, help="logged-in XMPP clients")
    parser.add_argument("--sip-uas", type=int, default=20, help="registered SIP user agents")
    parser.add_argument("--rates", default="500,1000,1500,2000,2500,3000,3500,4000,5000,6000",
                        help="messages/s of the steps, increasing")
    parser.add_argument("--duration", type=float, default=5, help="seconds per step")
    parser.add_argument("--latency-duration", type=float, default=10,
                        help="seconds of the latency run at half the maximum rate")
    parser.add_argument("--drain", type=float, default=3,
                        help="seconds to wait for a step's last messages after the last one left")
    parser.add_argument("--http-connections", type=int, default=8,
                        help="keep-alive connections of the HTTP API run")
    parser.add_argument("--http-messages", type=int, default=10000, help="sends of the HTTP API run")
    parser.add_argument("--quick", action="store_true",
                        help="--xmpp-clients 20 --sip-uas 10 --rates 500,1000,2000,3000 --duration 1 "
                             "--latency-duration 2 --drain 1 --http-messages 1000 (~25 s)")
    args = parser.parse_args()
    if args.quick:
        args.xmpp_clients, args.sip_uas, args.rates = 20, 10, "500,1000,2000,3000"
        args.duration, args.latency_duration, args.drain, args.http_messages = 1, 2, 1, 1000
    rates = [int(rate) for rate in args.rates.split(",")]
    if not (Path(sys.executable).parent / "convergence").exists():
        sys.exit(f"no `convergence` command beside {sys.executable}: run this script with the "
                 "Python of the virtualenv where Convergence is installed")
    directions = [args.only] if args.only else list(DIRECTIONS)
    first_ua, http_user = args.xmpp_clients, args.xmpp_clients + args.sip_uas
    names = [f"user{i}" for i in range(first_ua, http_user)]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs shared by the server and "
          f"one load-generator process (other work on the machine lowers every figure); "
          f"{args.xmpp_clients} XMPP clients (user0…), {args.sip_uas} SIP UAs (user{first_ua}…), "
          f"HTTP API as user{http_user}; steps of {args.duration:g} s at {args.rates}/s; latency "
          f"runs of {args.latency_duration:g} s\nConvergence configuration:\n"
          + convergence_config(Path("<tmp>"), *["<port>"] * 3))
    tmp = Path(tempfile.mkdtemp(prefix="convergence-load-"))
    try:
        make_certificate(tmp)
        setup_convergence(tmp, http_user + 1)
        sip_port, http_port = free_udp_port(), free_port()
        with serving("Convergence", tmp, 1, CrossClients, sip_port=sip_port, http_port=http_port) \
                as (proc, workers, login):
            if not answers_register(sip_port, 30):
                raise RuntimeError(f"the server does not answer SIP on udp 127.0.0.1:{sip_port}")
            login(args.xmpp_clients, 20, keep=True)
            workers.run("register", lambda i: {"sip_port": sip_port, "names": names})
            bench, results, http = Bench(proc, workers, args.drain), {}, None
            for direction in directions:
                print(f"\n== {DIRECTIONS[direction]} ==", flush=True)
                if direction == "http":
                    http = bench.http(http_port, create_token(tmp, f"user{http_user}"),
                                      args.http_connections, args.http_messages)
                else:
                    results[direction] = bench.direction(direction, rates, args.duration,
                                                         args.latency_duration)
        summary(results, http, rates)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
