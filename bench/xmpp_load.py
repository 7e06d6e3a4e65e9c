"""XMPP load: logins/s, delivered messages/s, latency and RSS per idle connection, against Prosody.

Run (from a checkout, with the project installed in the virtualenv):

    .venv/bin/python bench/xmpp_load.py            # Convergence and Prosody, then ours/Prosody ratios
    .venv/bin/python bench/xmpp_load.py --quick    # smaller numbers, ~30 s (the default run: ~1 min)
    .venv/bin/python bench/xmpp_load.py --only prosody --clients 400 --idle 2000 --duration 20

Prosody comes from the Debian package ``prosody`` (``apt-get install prosody``). The script starts each
server itself on free loopback ports, in a temporary directory, with accounts ``user0``.. of the
domain ``localhost`` (same SCRAM iteration count) and the same self-signed ECDSA P-256 certificate
(the kind Convergence makes for itself); both configurations are printed. For each server:

1. On a freshly started server, ``--clients`` clients log in once and disconnect (warm-up, not
   measured; the clients cache SCRAM's SaltedPassword per account as RFC 5802 §5.1 allows, so the
   measured logins cost the server, not the client's PBKDF2).
2. **logins/s**: they log in again, ``--concurrency`` at a time: TCP, STARTTLS, SASL SCRAM-SHA-1,
   bind, initial presence and an IQ whose answer proves the presence was processed.
3. **messages/s**: in pairs, they send each other ``<message type='chat'/>`` (to the full JID) for
   ``--duration`` s; each keeps ``--window`` messages in flight (it sends one for each it receives).
   The body is the send time, so each delivery gives a latency (p50, p99): under this saturating
   load it is mostly queueing (in flight / throughput).
4. **RSS per idle connection**, on a second freshly started server (a heap left big by earlier
   phases would change both the baseline and the speed): the server's VmRSS (/proc/PID/status)
   before and 2 s after ``--idle`` authenticated connections are open, divided by ``--idle``.
   With ``--idle-sm`` each of them also enables stream management with resumption (XEP-0198
   ``<enable resume='true'/>``), so the session's SM state is counted (Prosody loads
   ``mod_smacks`` for it, as it ships with 0.12).

The load generator is a minimal XMPP client of its own (gevent, regular expressions over the
received bytes) in ``--procs`` processes. Server and clients share the machine's cores: compare the
two servers within one run, not across machines.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import multiprocessing
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from convergence.credentials import DEFAULT_ITERATIONS as ITERATIONS  # Prosody's accounts get the same

DOMAIN = "localhost"
PASSWORD = "bench-secret"
LOGIN_TIMEOUT = 30  # seconds for any one answer during a login
PROSODY_MODULES = ["roster", "saslauth", "tls", "disco", "ping", "smacks"]  # plus its autoloaded core ones

# ---- the client (runs in worker processes) ------------------------------------------------------

FEATURES = re.compile(rb"<(?:stream:)?features\b.*?</(?:stream:)?features>", re.S)
PROCEED = re.compile(rb"<proceed\b")
CHALLENGE = re.compile(rb"<challenge\b[^>]*>([^<]*)</challenge>")
SUCCESS = re.compile(rb"<success\b[^>]*?(?:/>|>([^<]*)</success>)")
BOUND_JID = re.compile(rb"<jid>([^<]+)</jid>")
READY = re.compile(rb"<iq\b[^>]*\bid=(['\"])ready\1")
FAILED = re.compile(rb"<(stream:error|failure|failed)\b[^>]*?(?:/>|>.*?</\1>)", re.S)
ENABLED = re.compile(rb"<enabled\b[^>]*>")
BODY = re.compile(rb"<body\b[^>]*>([^<]*)</body>")
STREAM = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams'>").encode()


class ProtocolError(Exception):
    pass


class Client:
    """One account's connection: :meth:`login`, then :meth:`chat`."""

    def __init__(self, index: int):
        self.name = f"user{index}"
        self.sock = None
        self.buf = b""
        self.jid = ""

    def read_until(self, pattern: re.Pattern) -> re.Match:
        while True:
            match = pattern.search(self.buf)
            if match:
                self.buf = self.buf[match.end():]
                return match
            failed = FAILED.search(self.buf)
            if failed:
                raise ProtocolError(failed.group(0).decode(errors="replace"))
            data = self.sock.recv(65536)
            if not data:
                raise ProtocolError(f"connection closed; last received: {self.buf[-300:]!r}")
            self.buf += data

    def login(self, address, tls, keys: dict, sm: bool = False) -> None:
        from gevent import socket as gsocket
        self.sock = gsocket.create_connection(address, timeout=LOGIN_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(STREAM)
        if b"starttls" not in self.read_until(FEATURES).group(0):
            raise ProtocolError("no STARTTLS offered")
        self.sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(PROCEED)
        self.sock, self.buf = tls.wrap_socket(self.sock, server_hostname=DOMAIN), b""
        self.sock.sendall(STREAM)
        if b"SCRAM-SHA-1<" not in self.read_until(FEATURES).group(0):
            raise ProtocolError("no SCRAM-SHA-1 offered after STARTTLS")
        self.scram_sha1(keys)
        self.sock.sendall(STREAM)
        self.read_until(FEATURES)
        self.sock.sendall(b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          b"<resource>bench</resource></bind></iq>")
        self.jid = self.read_until(BOUND_JID).group(1).decode()
        if sm:  # XEP-0198 §3, with resumption: the server keeps the session's SM state
            self.sock.sendall(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            self.read_until(ENABLED)
        self.sock.sendall(b"<presence/><iq type='get' id='ready'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.read_until(READY)

    def scram_sha1(self, keys: dict) -> None:
        """RFC 5802 §3 client side, without channel binding; verifies the server signature."""
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={self.name},r={nonce}"
        self.sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
                          + base64.b64encode(b"n,," + first_bare.encode()) + b"</auth>")
        server_first = base64.b64decode(self.read_until(CHALLENGE).group(1)).decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        if not attrs["r"].startswith(nonce):
            raise ProtocolError("server nonce does not extend ours")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        if (self.name, salt, iterations) not in keys:
            salted = hashlib.pbkdf2_hmac("sha1", PASSWORD.encode(), salt, iterations)
            client_key = hmac.digest(salted, b"Client Key", "sha1")
            keys[self.name, salt, iterations] = (client_key, hashlib.sha1(client_key).digest(),
                                                 hmac.digest(salted, b"Server Key", "sha1"))
        client_key, stored_key, server_key = keys[self.name, salt, iterations]
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha1")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.sock.sendall(b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" + base64.b64encode(
            f"{without_proof},p={base64.b64encode(proof).decode()}".encode()) + b"</response>")
        final = base64.b64decode(self.read_until(SUCCESS).group(1) or b"").decode()
        expected = base64.b64encode(hmac.digest(server_key, auth_message, "sha1")).decode()
        if final != f"v={expected}":
            raise ProtocolError(f"bad server signature {final!r}")

    def exchange(self, start: float, stop: float, until: bytes):
        """From ``start`` to ``stop``: yield (now, received bytes up to the last ``until``) as they
        come; stops on a closed connection or an error stanza (ProtocolError)."""
        import gevent
        gevent.sleep(max(0.0, start - time.monotonic()))
        yield time.monotonic(), b""  # the start: time to send the first window
        while (remaining := stop - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            if not data:
                raise ProtocolError(f"{self.jid}: connection closed during the exchange")
            if b"type='error'" in data or b'type="error"' in data:
                at = max(data.find(b"type='error'"), data.find(b'type="error"'))
                raise ProtocolError(f"{self.jid}: error stanza during the exchange: "
                                    f"{data[max(0, at - 200):at + 500]!r}")
            buf = self.buf + data
            end = buf.rfind(until) + len(until)
            if end < len(until):
                self.buf = buf
                continue
            self.buf = buf[end:]
            yield time.monotonic(), buf[:end]

    def chat(self, peer: str, window: int, start: float, stop: float) -> list[float]:
        """Keep ``window`` messages to ``peer`` in flight until ``stop``; return the latencies."""
        head, tail = f"<message to='{peer}' type='chat'><body>".encode(), b"</body></message>"
        latencies = []
        for now, received in self.exchange(start, stop, b"</body>"):
            bodies = BODY.findall(received) if received else range(window)
            latencies.extend(now - float(body) for body in bodies if received)
            if now < stop:
                stamp = repr(now).encode()
                self.sock.sendall(b"".join(head + stamp + tail for _ in bodies))
        return latencies

    def close(self) -> None:
        self.sock.close()


class ClientProcess:
    """A client process's state, its logged-in clients; each method is a command of the parent."""

    def __init__(self, address):
        from gevent import ssl as gssl
        self.address = address
        self.tls = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
        self.tls.check_hostname, self.tls.verify_mode = False, gssl.CERT_NONE
        self.keys, self.clients = {}, []

    def login(self, indexes, concurrency, keep, sm=False):
        from gevent.pool import Pool
        errors = []

        def one(index):
            client = Client(index)
            try:
                client.login(self.address, self.tls, self.keys, sm)
            except Exception as exc:  # counted and reported, the run goes on
                errors.append(f"{client.name}: {type(exc).__name__}: {exc}")
                if client.sock:
                    client.sock.close()
                return
            if keep:
                self.clients.append(client)
            else:
                client.close()

        started = time.monotonic()
        Pool(concurrency).map(one, indexes)
        return started, time.monotonic(), len(indexes) - len(errors), errors[:3]

    def chat(self, window, start, stop):
        import gevent
        clients = self.clients
        pairs = list(zip(clients[0::2], clients[1::2]))
        jobs = [gevent.spawn(a.chat, b.jid, window, start, stop) for a, b in pairs]
        jobs += [gevent.spawn(b.chat, a.jid, window, start, stop) for a, b in pairs]
        gevent.joinall(jobs, raise_error=True)
        return [x for job in jobs for x in job.value]


def worker(pipe, address, kind=ClientProcess) -> None:
    """A client process: runs the parent's commands (a method of ``kind`` and its kwargs) and
    sends back results; None ends it."""
    state = kind(address)
    while (request := pipe.recv()) is not None:
        name, kwargs = request
        try:
            pipe.send(("ok", getattr(state, name)(**kwargs)))
        except Exception:
            pipe.send(("error", traceback.format_exc()))


class Workers:
    """``procs`` client processes; account ``userN`` always belongs to process ``N % procs``."""

    def __init__(self, procs: int, address, kind=ClientProcess):
        context = multiprocessing.get_context("spawn")
        self.pipes, self.procs = [], []
        for _ in range(procs):
            parent, child = context.Pipe()
            proc = context.Process(target=worker, args=(child, address, kind), daemon=True)
            proc.start()
            child.close()  # so that a dead worker is an EOFError here, not a hang
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(self, name: str, per_worker) -> list:
        """Send command ``name`` to every worker (kwargs from ``per_worker(i)``), return their results."""
        for i, pipe in enumerate(self.pipes):
            pipe.send((name, per_worker(i)))
        try:
            results = [pipe.recv() for pipe in self.pipes]
        except EOFError:
            raise RuntimeError("a client process died") from None
        for status, value in results:
            if status == "error":
                raise RuntimeError(f"client process failed:\n{value}")
        return [value for _, value in results]

    def login(self, count: int, concurrency: int, keep: bool, sm: bool = False) -> tuple[float, int, list[str]]:
        """Log in user0..user<count-1> (``sm``: enabling stream management); return (logins/s,
        successes, first errors)."""
        n = len(self.pipes)
        results = self.run("login", lambda i: {"indexes": range(i, count, n), "keep": keep, "sm": sm,
                                                "concurrency": max(1, concurrency // n)})
        elapsed = max(r[1] for r in results) - min(r[0] for r in results)
        ok = sum(r[2] for r in results)
        return ok / elapsed, ok, [e for r in results for e in r[3]]

    def stop(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs):
            with contextlib.suppress(OSError):  # a dead worker's pipe is broken
                pipe.send(None)
            proc.join(5)


# ---- the servers ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all its threads (proc(5): utime, stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(proc: subprocess.Popen, port: int, name: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen for XMPP on 127.0.0.1:{port} within {timeout:.0f} s; "
                       f"its log:\n{tail(log)}")


def tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def make_certificate(tmp: Path) -> None:
    """The certificate both servers use: ``tmp/tls/localhost.{crt,key}``, as Convergence makes its own."""
    from convergence.certificates import generate
    generate(DOMAIN, tmp / "tls" / f"{DOMAIN}.crt", tmp / "tls" / f"{DOMAIN}.key")


def setup_prosody(tmp: Path, accounts: int) -> None:
    """Write the accounts as mod_auth_internal_hashed stores them (what ``prosodyctl register`` does)."""
    directory = tmp / "data" / DOMAIN / "accounts"  # datamanager's path for the host "localhost"
    directory.mkdir(parents=True)
    for i in range(accounts):
        salt = str(uuid.uuid4())  # Prosody's kind of salt
        salted = hashlib.pbkdf2_hmac("sha1", PASSWORD.encode(), salt.encode(), ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", "sha1")
        (directory / f"user{i}.dat").write_text(
            f'return {{\n\t["iteration_count"] = {ITERATIONS};\n\t["salt"] = "{salt}";\n'
            f'\t["stored_key"] = "{hashlib.sha1(client_key).hexdigest()}";\n'
            f'\t["server_key"] = "{hmac.digest(salted, b"Server Key", "sha1").hex()}";\n}};\n')


def prosody_config(tmp: Path, port) -> str:
    modules = "; ".join(f'"{m}"' for m in PROSODY_MODULES)
    return f"""run_as_root = true
pidfile = "{tmp}/prosody.pid"
data_path = "{tmp}/data"
certificates = "{tmp}/tls"
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s"; "s2s_auth_certs" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
allow_registration = false
log = {{ warn = "{tmp}/prosody.log" }}
VirtualHost "{DOMAIN}"
"""


def start_prosody(tmp: Path, port: int) -> subprocess.Popen:
    config = tmp / "prosody.cfg.lua"
    config.write_text(prosody_config(tmp, port))
    return subprocess.Popen(["prosody", "--config", str(config), "-F"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=tmp)


def setup_convergence(tmp: Path, accounts: int) -> None:
    """Create the database and the accounts in this process (``convergence user add`` takes ~1 s each)."""
    from convergence.config import load
    from convergence.core import Core
    core = Core.create(load(None, {"server": {"domain": DOMAIN, "data_dir": str(tmp / "data")}}))
    try:
        core.db.upgrade()
        for i in range(accounts):
            core.add_account(f"user{i}", PASSWORD)
    finally:
        core.close()


#: ``--xmpp-option`` lines added to Convergence's [xmpp] table (e.g. ``archive = false``)
XMPP_OPTIONS: list[str] = []


def convergence_config(tmp: Path, port, http_port, sip_port) -> str:
    """shared_roster is off: Prosody has no shared roster either (mod_groups is not loaded)."""
    extra = "".join(f"{line}\n" for line in XMPP_OPTIONS)
    return f"""[server]
domain = "{DOMAIN}"
data_dir = "{tmp}/data"
log_level = "warning"
[xmpp]
listen = "127.0.0.1:{port}"
s2s_listen = ""
tls_cert = "{tmp}/tls/{DOMAIN}.crt"
tls_key = "{tmp}/tls/{DOMAIN}.key"
shared_roster = false
{extra}[http]
listen = "127.0.0.1:{http_port}"
[sip]
listen = "127.0.0.1:{sip_port}"
"""


def start_convergence(tmp: Path, port: int, http_port: int = 0, sip_port: int = 0) -> subprocess.Popen:
    config = tmp / "convergence.toml"
    config.write_text(convergence_config(tmp, port, http_port or free_port(), sip_port or free_port()))
    with (tmp / "convergence.log").open("a") as log:
        return subprocess.Popen([str(Path(sys.executable).parent / "convergence"), "--config", str(config),
                                 "serve"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp, env=environment())


def environment() -> dict:
    """Ours without CONVERGENCE_ variables, which would override the configuration file."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENCE_")}


SERVERS = {  # name: (create the accounts, start on a port, log file)
    "Convergence": (setup_convergence, start_convergence, "convergence.log"),
    "Prosody": (setup_prosody, start_prosody, "prosody.log"),
}


# ---- one run against one server -------------------------------------------------------------------

@contextlib.contextmanager
def serving(name: str, tmp: Path, procs: int, kind=ClientProcess, start=None, **options):
    """A freshly started server and its client processes (``kind``: :class:`ClientProcess` or a
    subclass with more commands; ``start``: another start function than ``SERVERS``'; ``options``
    go to the start function): yields (server process, Workers, login fn)."""
    _, default_start, log = SERVERS[name]
    start = start or default_start
    port, log = free_port(), tmp / log
    proc, workers = start(tmp, port, **options), None

    def login(count: int, concurrency: int, keep: bool, sm: bool = False) -> float:
        rate, ok, errors = workers.login(count, concurrency, keep, sm)
        if ok < count:
            raise RuntimeError(f"{name}: {count - ok} of {count} logins failed, e.g.\n  "
                               + "\n  ".join(errors) + f"\nserver log:\n{tail(log)}")
        return rate

    try:
        wait_listening(proc, port, name, log)
        workers = Workers(procs, ("127.0.0.1", port), kind)
        yield proc, workers, login
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if workers:
            workers.stop()


def measure(name: str, args) -> dict:
    """Logins and messages on one fresh server, idle memory on another (a big heap slows Prosody)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"xmpp-load-{name.lower()}-"))
    try:
        make_certificate(tmp)
        started = time.monotonic()
        SERVERS[name][0](tmp, max(args.clients, args.idle))
        load = os.getloadavg()[0]
        print(f"{name}: {max(args.clients, args.idle)} accounts created in "
              f"{time.monotonic() - started:.1f} s in {tmp}; load average {load:.1f}"
              + (" (other work is running: the figures will be noisy)" if load > 0.5 else ""), flush=True)
        with serving(name, tmp, args.procs) as (proc, workers, login):
            login(args.clients, args.concurrency, keep=False)  # warm-up
            before = cpu_seconds(proc.pid)
            logins = login(args.clients, args.concurrency, keep=True)
            login_cpu = cpu_seconds(proc.pid) - before
            before, start = cpu_seconds(proc.pid), time.monotonic() + 0.5
            results = workers.run("chat", lambda i: {"window": args.window, "start": start,
                                                     "stop": start + args.duration})
            latencies = sorted(x for r in results for x in r)
            if not latencies:
                raise RuntimeError(f"{name}: no message was delivered")
            message_cpu = cpu_seconds(proc.pid) - before
            print(f"{name}: {logins:.0f} logins/s, {len(latencies) / args.duration:.0f} messages/s "
                  f"(server CPU {100 * message_cpu / args.duration:.0f} % busy meanwhile)", flush=True)
        with serving(name, tmp, args.procs) as (proc, workers, login):
            login(10, 10, keep=False)  # warm-up
            before = rss_kb(proc.pid)
            login(args.idle, args.concurrency, keep=True, sm=args.idle_sm)
            time.sleep(2)
            idle_kb = (rss_kb(proc.pid) - before) / args.idle
        print(f"{name}: {args.idle} idle connections{' with stream management' if args.idle_sm else ''}, "
              f"{idle_kb:.1f} KB each", flush=True)
        return {"logins": logins, "login_cpu": 1e3 * login_cpu / args.clients,
                "messages": len(latencies) / args.duration,
                "message_cpu": 1e6 * message_cpu / len(latencies),
                **percentiles(latencies), "idle_kb": idle_kb}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def percentiles(latencies: list[float]) -> dict:
    """p50 and p99 in ms of ``latencies`` (seconds, sorted)."""
    return {"p50": 1e3 * latencies[len(latencies) // 2],
            "p99": 1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}


METRICS = [  # key, label, format, True if higher is better
    ("logins", "logins/s (STARTTLS+SCRAM-SHA-1+bind)", "{:,.0f}", True),
    ("login_cpu", "server CPU per login (ms)", "{:.2f}", False),
    ("messages", "delivered messages/s", "{:,.0f}", True),
    ("message_cpu", "server CPU per message (µs)", "{:.0f}", False),
    ("p50", "latency p50 (ms)", "{:.1f}", False),
    ("p99", "latency p99 (ms)", "{:.1f}", False),
    ("idle_kb", "RSS per idle connection (KB)", "{:.1f}", False),
]


def print_table(results: dict, metrics=METRICS) -> None:
    """``results`` ({server: {key: value}}) as a table of ``metrics``, with ours/Prosody when both ran."""
    names = list(results)
    print(f"\n{'metric':<38}" + "".join(f"{n:>13}" for n in names)
          + (f"{'ours/Prosody':>14}  better" if len(names) == 2 else ""))
    for key, label, fmt, higher in metrics:
        row = f"{label:<38}" + "".join(f"{fmt.format(results[n][key]):>13}" for n in names)
        if len(names) == 2:
            ours, theirs = results["Convergence"][key], results["Prosody"][key]
            row += f"{ours / theirs:>13.2f}×  {'higher' if higher else 'lower'}"
        print(row)


def main():
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    parser.add_argument("--only", choices=["prosody", "convergence"], help="measure one server only")
    parser.add_argument("--clients", type=int, default=200,
                        help="logged-in clients exchanging messages in pairs")
    parser.add_argument("--idle", type=int, default=1000, help="idle authenticated connections for RSS")
    parser.add_argument("--idle-sm", action="store_true",
                        help="the idle connections enable stream management with resumption (XEP-0198)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of message exchange")
    parser.add_argument("--window", type=int, default=5, help="messages each client keeps in flight")
    parser.add_argument("--concurrency", type=int, default=50, help="logins in progress at once")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--quick", action="store_true", help="--clients 40 --idle 200 --duration 3")
    parser.add_argument("--xmpp-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a TOML line for Convergence's [xmpp] table, e.g. 'archive=false'")
    args = parser.parse_args()
    XMPP_OPTIONS.extend(args.xmpp_option)
    if args.quick:
        args.clients, args.idle, args.duration = 40, 200, 3
    args.clients += -args.clients % (2 * args.procs)  # every process gets whole pairs
    servers = {"convergence": ["Convergence"], "prosody": ["Prosody"]}.get(args.only,
                                                                          ["Convergence", "Prosody"])
    if "Prosody" in servers and not shutil.which("prosody"):
        sys.exit("prosody is not on PATH: install the Debian package 'prosody' "
                 "(apt-get install prosody), or run with --only convergence")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (max(args.clients, args.idle) + 100)
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"open-file limit {hard} is below the {need} needed: lower --idle/--clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by servers and clients
    print(f"{os.cpu_count()} CPUs shared by the server and {args.procs} client processes; "
          f"{args.clients} clients, window {args.window}, {args.duration:g} s; "
          f"{args.idle} idle connections; login concurrency {args.concurrency}; "
          f"domain {DOMAIN}, SCRAM iterations {ITERATIONS}")
    if "Prosody" in servers:
        about = subprocess.run(["prosodyctl", "about"], capture_output=True, text=True).stdout
        print(f"{about.partition(chr(10))[0] or 'Prosody'} configuration:\n"
              + prosody_config(Path("<tmp>"), "<port>"))
    if "Convergence" in servers:
        print("Convergence configuration:\n" + convergence_config(Path("<tmp>"), *["<port>"] * 3))
    results, failures = {}, {}
    for name in servers:
        try:
            results[name] = measure(name, args)
        except RuntimeError as exc:
            failures[name] = str(exc)
            print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
    if results:
        print_table(results)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
