"""Federation load: messages/s and latency across a federated pair of servers on loopback, ours
against Prosody's, and the time to set up a server-to-server stream (issue 13).

Run (from a checkout, with the project installed in the virtualenv):

    .venv/bin/python bench/s2s_load.py                 # both pairs, then the ours/Prosody ratios
    .venv/bin/python bench/s2s_load.py --pairs 50 --window 10 --duration 10
    .venv/bin/python bench/s2s_load.py --only convergence

Each pair is two servers of the same kind, ``a.bench`` and ``b.bench``, with their
server-to-server listeners on free loopback ports; each finds the other without DNS: ours through
``[xmpp] s2s_hosts``, Prosody through the test suite's ``mod_test_s2s_hosts`` module
(tests/federation/prosody.py). Both use STARTTLS and dialback (XEP-0220) with self-signed
certificates. Per pair:

1. **stream set-up**: the first message from ``user0@A`` to ``user0@B``: its latency covers the
   TCP connection, STARTTLS, both dialback checks (B asks A's authoritative server over a second
   stream) and the delivery;
2. **messages/s**: ``--pairs`` users on A and as many on B send each other ``<message
   type='chat'/>`` (to the full JID, so both servers route it over the one s2s stream each way) for
   ``--duration`` seconds, each keeping ``--window`` in flight (it sends one for each it receives);
   the body is the send time, so each delivery gives a latency (p50, p99);
3. **streams/s**: this process plays ``--streams`` other servers (``o0.bench``, ...; both servers
   are told they listen on its port) and sets up one inbound stream from each to B,
   ``--stream-concurrency`` at a time: TCP, STARTTLS, our ``<db:result/>``, then B checks the key
   with the originating domain's authoritative server (this process again: B opens a stream back
   to it, with its own STARTTLS, and sends ``<db:verify/>``), and answers ``type='valid'``. A
   set-up is counted from the TCP connect to that answer: streams/s and its p50/p99 latency.

The clients (bench/xmpp_load.py's, logging in with SASL PLAIN here: logins are not what is
measured) run in this process under gevent. Servers and clients share the machine's cores:
compare the two pairs within one run, not across machines.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from base64 import b64encode
from pathlib import Path

import gevent
from gevent import socket as gsocket
from gevent import ssl as gssl

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
import xmpp_load  # noqa: E402  (the client's chat loop)
from federation.prosody import MODULE  # noqa: E402  (Prosody's s2s_hosts)

PASSWORD = "bench-secret"


class Client(xmpp_load.Client):
    def login_plain(self, domain: str, port: int) -> None:
        header = (f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams'>").encode()
        tls = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname, tls.verify_mode = False, gssl.CERT_NONE
        self.sock = gsocket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(header)
        self.read_until(xmpp_load.FEATURES)
        self.sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(xmpp_load.PROCEED)
        self.sock, self.buf = tls.wrap_socket(self.sock), b""
        self.sock.sendall(header)
        self.read_until(xmpp_load.FEATURES)
        credentials = b64encode(f"\0{self.name}\0{PASSWORD}".encode())
        self.sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                          + credentials + b"</auth>")
        self.read_until(xmpp_load.SUCCESS)
        self.sock.sendall(header)
        self.read_until(xmpp_load.FEATURES)
        self.sock.sendall(b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          b"<resource>bench</resource></bind></iq>")
        self.jid = self.read_until(xmpp_load.BOUND_JID).group(1).decode()
        self.sock.sendall(b"<presence/><iq type='get' id='ready'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.read_until(xmpp_load.READY)


# ---- the servers ----------------------------------------------------------------------------------

DOMAINS = ("a.bench", "b.bench")


def start_convergence(tmp: Path, domain: str, port: int, users: int, s2s: dict) -> subprocess.Popen:
    from convergence.config import load
    from convergence.core import Core
    data = tmp / domain / "data"
    core = Core.create(load(None, {"server": {"domain": domain, "data_dir": str(data)}}))
    try:
        core.db.upgrade()
        for i in range(users):
            core.add_account(f"user{i}", PASSWORD)
    finally:
        core.close()
    config = tmp / domain / "convergence.toml"
    config.write_text(f"""[server]
domain = "{domain}"
data_dir = "{data}"
log_level = "warning"
[xmpp]
listen = "127.0.0.1:{port}"
s2s_listen = "127.0.0.1:{s2s[domain]}"
s2s_hosts = {{ {", ".join(f'"{d}" = "127.0.0.1:{p}"' for d, p in s2s.items() if d != domain)} }}
shared_roster = false
[http]
listen = "127.0.0.1:{xmpp_load.free_port()}"
[sip]
listen = "127.0.0.1:{xmpp_load.free_port()}"
""")
    log = (tmp / domain / "convergence.log").open("a")
    return subprocess.Popen([str(Path(sys.executable).parent / "convergence"), "--config", str(config),
                             "serve"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                            env=xmpp_load.environment())


def start_prosody(tmp: Path, domain: str, port: int, users: int, s2s: dict) -> subprocess.Popen:
    from convergence.certificates import generate
    folder = tmp / domain
    accounts = folder / "data" / domain.replace(".", "%2e") / "accounts"
    accounts.mkdir(parents=True)
    for i in range(users):
        (accounts / f"user{i}.dat").write_text(f'return {{ ["password"] = "{PASSWORD}"; }};\n')
    generate(domain, folder / "cert.pem", folder / "key.pem")
    (folder / "plugins").mkdir()
    (folder / "plugins" / "mod_test_s2s_hosts.lua").write_text(MODULE)
    peers = " ".join(f'["{d}"] = {{ "127.0.0.1", {p} }};' for d, p in s2s.items() if d != domain)
    config = folder / "prosody.cfg.lua"
    config.write_text(f"""run_as_root = true
pidfile = "{folder}/prosody.pid"
data_path = "{folder}/data"
plugin_paths = {{ "{folder}/plugins" }}
test_s2s_hosts = {{ {peers} }}
network_backend = "epoll"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ {s2s[domain]} }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "dialback", "disco", "ping", "test_s2s_hosts" }}
modules_disabled = {{ "s2s_bidi" }}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = false
log = {{ warn = "{folder}/prosody.log" }}
VirtualHost "{domain}"
    ssl = {{ certificate = "{folder}/cert.pem", key = "{folder}/key.pem" }}
""")
    return subprocess.Popen(["prosody", "--config", str(config), "-F"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=folder)


SERVERS = {"convergence": start_convergence, "prosody": start_prosody}


# ---- stream set-ups: this process as many originating servers ------------------------------------

S2S_HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream="
              "'http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
              "from='{from_}' to='{to}' version='1.0'{id}>")
HEADER_ID = re.compile(rb"<stream:stream\b[^>]*?\sid=(['\"])(.*?)\1")
HEADER_ATTRS = re.compile(rb"<stream:stream\b([^>]*)>")
ATTR = re.compile(rb"\b(from|to)=(['\"])(.*?)\2")
# the db: prefix (Prosody) or the namespace declared on the element (ours)
VALID = re.compile(rb"<(?:db:)?result\b[^>]*\btype=(['\"])valid\1")
DIALBACK_ELEMENT = re.compile(rb"<(?:db:)?(verify|result)\b([^>]*?)(?:/>|>([^<]*)</(?:db:)?\1>)")
STARTTLS = re.compile(rb"<starttls\b")


def percentile(values: list, fraction: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * fraction))] * 1000 if values else float("nan")


class Originators:
    """Many originating servers at once: opens their streams to B (``run``) and, as their
    authoritative server, answers B's ``<db:verify/>`` on the streams B opens back (``port``)."""

    def __init__(self, folder: Path):
        from gevent.server import StreamServer

        from convergence.certificates import generate
        folder.mkdir(parents=True, exist_ok=True)
        generate("bench", folder / "cert.pem", folder / "key.pem")
        self.tls = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(folder / "cert.pem", folder / "key.pem")
        self.client_tls = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
        self.client_tls.check_hostname, self.client_tls.verify_mode = False, gssl.CERT_NONE
        self.keys: dict[tuple[str, str], str] = {}  # (origin, stream id at B) -> the key we sent
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.port = self.server.server_port
        self.back = []  # B's streams to us

    @staticmethod
    def _read(sock, buf: bytes, pattern: re.Pattern):
        while True:
            match = pattern.search(buf)
            if match:
                return match, buf[match.end():]
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the stream")
            buf += data

    def _serve(self, sock, address) -> None:
        """A stream from B to one of our domains: STARTTLS, dialback offered, every
        ``<db:verify/>`` answered from ``keys`` and every ``<db:result/>`` accepted."""
        self.back.append(sock)
        with contextlib.suppress(OSError, ConnectionError):
            sock.settimeout(60)
            match, buf = self._read(sock, b"", HEADER_ATTRS)
            attrs = {k.decode(): v.decode() for k, _, v in ATTR.findall(match.group(1))}
            ours, theirs = attrs.get("to", ""), attrs.get("from", "")
            sock.sendall(S2S_HEADER.format(from_=ours, to=theirs, id=" id='in1'").encode()
                         + b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                           b"<required/></starttls></stream:features>")
            _, buf = self._read(sock, buf, STARTTLS)
            sock.sendall(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            sock = self.tls.wrap_socket(sock, server_side=True)
            _, buf = self._read(sock, b"", HEADER_ATTRS)
            sock.sendall(S2S_HEADER.format(from_=ours, to=theirs, id=" id='in2'").encode()
                         + b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/>"
                           b"</stream:features>")
            while True:
                match, buf = self._read(sock, buf, DIALBACK_ELEMENT)
                kind, attrs, key = match.group(1), match.group(2), (match.group(3) or b"").strip()
                if b"type=" in attrs:
                    continue
                values = {k.decode(): v.decode() for k, _, v in ATTR.findall(attrs)}
                origin, receiving = values.get("to", ""), values.get("from", "")
                if kind == b"verify":
                    stream_id = re.search(rb"\bid=(['\"])(.*?)\1", attrs).group(2).decode()
                    valid = self.keys.get((origin, stream_id)) == key.decode()
                    sock.sendall(f"<db:verify from='{origin}' to='{receiving}' id='{stream_id}' "
                                 f"type='{'valid' if valid else 'invalid'}'/>".encode())
                else:
                    sock.sendall(f"<db:result from='{origin}' to='{receiving}' type='valid'/>".encode())

    def setup(self, origin: str, domain: str, port: int) -> float:
        """One inbound stream from ``origin`` to ``domain`` at ``port``, up to its authentication."""
        started = time.monotonic()
        sock = gsocket.create_connection(("127.0.0.1", port), timeout=60)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(S2S_HEADER.format(from_=origin, to=domain, id="").encode())
            _, buf = self._read(sock, b"", xmpp_load.FEATURES)
            sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            self._read(sock, buf, xmpp_load.PROCEED)
            sock = self.client_tls.wrap_socket(sock, server_hostname=domain)
            sock.sendall(S2S_HEADER.format(from_=origin, to=domain, id="").encode())
            match, buf = self._read(sock, b"", HEADER_ID)
            _, buf = self._read(sock, buf, xmpp_load.FEATURES)
            key = os.urandom(32).hex()
            self.keys[(origin, match.group(2).decode())] = key
            sock.sendall(f"<db:result from='{origin}' to='{domain}'>{key}</db:result>".encode())
            self._read(sock, buf, VALID)
            elapsed = time.monotonic() - started
            sock.sendall(b"</stream:stream>")
            return elapsed
        finally:
            sock.close()

    def run(self, domain: str, port: int, origins: list, concurrency: int):
        """Every origin's stream to ``domain``, ``concurrency`` at a time: (streams/s, latencies)."""
        from gevent.pool import Pool
        pool = Pool(concurrency)
        started = time.monotonic()
        latencies = pool.map(lambda origin: self.setup(origin, domain, port), origins)
        return len(origins) / (time.monotonic() - started), latencies

    def stop(self) -> None:
        self.server.stop(timeout=1)
        for sock in self.back:
            sock.close()


def measure(kind: str, args, tmp: Path) -> dict:
    domains = list(DOMAINS)
    ports = [xmpp_load.free_port(), xmpp_load.free_port()]
    s2s = {domain: xmpp_load.free_port() for domain in domains}
    authority = Originators(tmp / kind / "origins")
    origins = [f"o{i}.bench" for i in range(args.streams)]
    s2s.update(dict.fromkeys(origins, authority.port))  # both servers find them all here
    procs = [SERVERS[kind](tmp / kind, d, p, args.pairs, s2s) for d, p in zip(domains, ports)]
    try:
        for proc, port, domain in zip(procs, ports, domains):
            xmpp_load.wait_listening(proc, port, kind, tmp / kind / domain / f"{kind}.log")
        for domain in domains:  # the s2s listener too
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", s2s[domain]), timeout=1).close()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind}: no s2s listener for {domain} on port {s2s[domain]}")
                gevent.sleep(0.05)  # another process opens the port: no event to wait on
        sides = [[Client(i) for i in range(args.pairs)] for _ in domains]
        jobs = [gevent.spawn(c.login_plain, d, p) for side, d, p in zip(sides, domains, ports) for c in side]
        gevent.joinall(jobs, raise_error=True)
        first, second = sides
        # 1. stream set-up: the first message across, and back (both directions set up)
        started = time.monotonic()
        first[0].sock.sendall(f"<message to='{second[0].jid}' type='chat'><body>x</body></message>".encode())
        second[0].read_until(xmpp_load.BODY)
        setup = time.monotonic() - started
        second[0].sock.sendall(f"<message to='{first[0].jid}' type='chat'><body>y</body></message>".encode())
        first[0].read_until(xmpp_load.BODY)
        # 2. messages/s with every pair chatting
        start = time.monotonic() + 0.5
        stop = start + args.duration
        chats = [gevent.spawn(a.chat, b.jid, args.window, start, stop) for a, b in zip(first, second)]
        chats += [gevent.spawn(b.chat, a.jid, args.window, start, stop) for a, b in zip(first, second)]
        gevent.joinall(chats, raise_error=True)
        latencies = sorted(x for job in chats for x in job.value)
        for client in first + second:
            client.close()
        # 3. stream set-ups with dialback from many originating domains
        rate, setups = authority.run(DOMAINS[1], s2s[DOMAINS[1]], origins, args.stream_concurrency)
        return {"setup ms": setup * 1000, "msgs/s": len(latencies) / args.duration,
                "p50 ms": percentile(latencies, 0.5), "p99 ms": percentile(latencies, 0.99),
                "streams/s": rate, "stream p50": percentile(setups, 0.5),
                "stream p99": percentile(setups, 0.99)}
    finally:
        authority.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=100, help="stream set-ups to measure")
    parser.add_argument("--stream-concurrency", type=int, default=10)
    parser.add_argument("--only", choices=sorted(SERVERS))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="s2s-load-") as tmp:
        for kind in [args.only] if args.only else ["convergence", "prosody"]:
            results[kind] = measure(kind, args, Path(tmp))
    columns = ["setup ms", "msgs/s", "p50 ms", "p99 ms", "streams/s", "stream p50", "stream p99"]
    print(f"{'pair':<14}" + "".join(f"{c:>12}" for c in columns))
    for kind, row in results.items():
        print(f"{kind:<14}" + "".join(f"{row[c]:>12.1f}" for c in columns))
    if len(results) == 2:
        ours, theirs = results["convergence"], results["prosody"]
        print(f"{'ours/Prosody':<14}" + "".join(f"{ours[c] / theirs[c]:>12.2f}" for c in columns))


if __name__ == "__main__":
    main()
