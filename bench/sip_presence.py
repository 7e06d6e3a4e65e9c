"""SIP presence: SUBSCRIBE setups/s and NOTIFYs/s fanned out, Convergence and Kamailio side by side.

Run: python bench/sip_presence.py [--watchers 100,1000] [--changes 10] [--only convergence|kamailio]
     [--kamailio-auth]

Needs Convergence installed in the running Python (the ``convergence`` command beside
sys.executable) and, for the comparison, ``kamailio`` with the presence modules (Debian packages
``kamailio`` and ``kamailio-presence-modules``); without Kamailio only Convergence is measured.

Both servers run on free UDP ports of 127.0.0.1, started here, one after the other. The client is
this script: one UDP socket holds every watcher's subscription (distinct Call-IDs and tags), one
more is the presentity's phone. For N watchers (default 100 and 1,000):

- **setups**: N SUBSCRIBEs to ``sip:p@bench.test`` (``Expires: 3600``), at most 200 outstanding;
  a setup is done when its 200 came (Convergence challenges each with 407 and gets a second,
  authenticated SUBSCRIBE, as it does for MESSAGE; Kamailio, as configured here with
  ``presence`` + ``presence_xml`` and ``force_active``, accepts at once, or with
  ``--kamailio-auth`` challenges the same way from a db_text ``subscriber`` table). Every initial NOTIFY is
  answered 200. Rate = N / (first SUBSCRIBE sent → last 200 and last initial NOTIFY received).
- **fan-out**: the presentity changes state ``--changes`` times (a PUBLISH of a PIDF alternating
  ``away`` and ``busy``; Convergence wants it authenticated and from a registered phone, so the
  phone REGISTERs first). After each change the client waits until each of the N watchers got its
  NOTIFY (answered 200 at once) before the next change. Rate = N × changes / (first PUBLISH sent →
  last NOTIFY received).

Kamailio runs with ONE UDP worker (``children=1``), subscriptions in memory
(``subs_db_mode=0``), presentity in db_text; Convergence is one process with SQLite. The client
shares the machine's cores with the server, so the figures are for this machine; the ratio is
what to read. Results are printed as a table.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sip_load import BenchError, Server, free_udp_port, kamailio_modules_dir  # noqa: E402

DOMAIN = "bench.test"
PASSWORD = "bench-password"
PRESENTITY, WATCHER = "p", "w"
WINDOW = 200  # SUBSCRIBEs outstanding at once
STALL = 2.0  # seconds without progress before the outstanding requests are sent again
GIVE_UP = 60.0

PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:p@bench.test">'
        '<tuple id="t1"><status><basic>open</basic></status></tuple>'
        '<dm:person id="p1"><rpid:activities><rpid:{activity}/></rpid:activities>'
        '<dm:note>change {n}</dm:note></dm:person></presence>')

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="{domain}"
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_text.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
{auth_modules}modparam("presence", "db_url", "text://{db}")
modparam("presence", "server_address", "sip:{domain}@127.0.0.1:{port}")
modparam("presence", "subs_db_mode", 0)
modparam("presence", "publ_cache", 1)
modparam("presence_xml", "db_url", "text://{db}")
modparam("presence_xml", "force_active", 1)

request_route {{
{auth}    if (is_method("PUBLISH|SUBSCRIBE")) {{
        if (!t_newtran()) {{ sl_reply_error(); exit; }}
        if (is_method("PUBLISH")) {{ handle_publish(); t_release(); }}
        else {{ handle_subscribe(); t_release(); }}
        exit;
    }}
    if (is_method("REGISTER")) {{ save("location"); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""
#: db_text tables the presence modules open (their schemas come with the kamailio package).
KAMAILIO_TABLES = ("version", "presentity", "active_watchers", "watchers", "xcap")
#: --kamailio-auth: MD5 digest (407) for PUBLISH and initial SUBSCRIBE, as Convergence asks.
KAMAILIO_AUTH_MODULES = """loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "text://{db}")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
"""
KAMAILIO_AUTH = """    if (is_method("PUBLISH") || (is_method("SUBSCRIBE") && !has_totag())) {{
        if (!proxy_authenticate("{domain}", "subscriber")) {{
            proxy_challenge("{domain}", "1");
            exit;
        }}
        consume_credentials();
    }}
"""


# ---- a minimal SIP user agent ------------------------------------------------------------------
def parse(data: bytes) -> tuple[str, dict[str, str], list[str], bytes]:
    """(start line, first value of each header by lower-case name, the Via lines, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers, vias = {}, []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name in ("via", "v"):
            vias.append(line)
        headers.setdefault({"f": "from", "t": "to", "i": "call-id"}.get(name, name), value)
    return lines[0], headers, vias, body


def ok_for(headers: dict[str, str], vias: list[str]) -> bytes:
    """200 OK to a request (RFC 3261 §8.2.6.2)."""
    to = headers["to"] if ";tag=" in headers["to"] else headers["to"] + ";tag=w"
    return ("SIP/2.0 200 OK\r\n" + "".join(v + "\r\n" for v in vias)
            + f"From: {headers['from']}\r\nTo: {to}\r\nCall-ID: {headers['call-id']}\r\n"
              f"CSeq: {headers['cseq']}\r\nContent-Length: 0\r\n\r\n").encode()


def authorization(challenge: str, user: str, method: str, uri: str) -> str:
    """Digest credentials (RFC 2617 MD5, qop=auth) answering a Proxy/WWW-Authenticate value."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    ha1 = md5(f"{user}:{params['realm']}:{PASSWORD}")
    cnonce, nc = uuid.uuid4().hex[:8], "00000001"
    answer = md5(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{md5(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="{uri}", response="{answer}", algorithm=MD5, qop=auth, nc={nc}, '
            f'cnonce="{cnonce}"')


class Agent:
    """One UDP socket on 127.0.0.1 sending requests to the server at ``port``."""

    def __init__(self, port: int):
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def request(self, method: str, uri: str, user: str, call_id: str, tag: str, cseq: int,
                to: str, headers: tuple = (), body: str = "") -> bytes:
        data = (f"{method} {uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag={tag}\r\nTo: {to}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{self.port}>\r\n"
                + "".join(f"{h}\r\n" for h in headers)
                + f"Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()
        self.sock.sendto(data, self.server)
        return data

    def read(self):
        """Every datagram waiting, parsed."""
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return
            yield parse(data)


class Watchers:
    """N subscriptions from one socket; answers every NOTIFY and counts them."""

    def __init__(self, port: int, n: int):
        self.agent, self.n = Agent(port), n
        self.run = uuid.uuid4().hex[:6]
        self.notifies = 0
        self.accepted: set[str] = set()
        self.sent: dict[str, bytes] = {}  # Call-ID → last request sent, while unanswered

    def subscribe(self, i: int, cseq: int = 1, auth: str | None = None) -> None:
        call_id = f"s{i}-{self.run}"
        headers = ("Event: presence", "Expires: 3600", "Accept: application/pidf+xml")
        if auth:
            headers += (f"Proxy-Authorization: {auth}",)
        self.sent[call_id] = self.agent.request(
            "SUBSCRIBE", f"sip:{PRESENTITY}@{DOMAIN}", WATCHER, call_id, f"t{i}", cseq,
            f"<sip:{PRESENTITY}@{DOMAIN}>", headers)

    def handle(self) -> bool:
        """Handle what waits; whether anything came."""
        progress = False
        for start, headers, vias, _ in self.agent.read():
            progress = True
            if start.startswith("NOTIFY"):
                self.agent.sock.sendto(ok_for(headers, vias), self.agent.server)
                self.notifies += 1
                continue
            call_id, status = headers.get("call-id", ""), int(start.split()[1])
            if status == 407 and call_id in self.sent:
                i = int(call_id[1:].split("-")[0])
                cseq = int(headers["cseq"].split()[0]) + 1
                if cseq > 2:
                    raise BenchError(f"SUBSCRIBE credentials refused: {start}")
                self.subscribe(i, cseq, authorization(headers["proxy-authenticate"], WATCHER,
                                                      "SUBSCRIBE", f"sip:{PRESENTITY}@{DOMAIN}"))
            elif status in (200, 202):
                self.sent.pop(call_id, None)
                self.accepted.add(call_id)
            elif status >= 300:
                raise BenchError(f"SUBSCRIBE refused: {start}")
        return progress

    def resend(self) -> None:
        for data in list(self.sent.values()):
            self.agent.sock.sendto(data, self.agent.server)


def wait(selector, until, what: str, on_stall=None) -> None:
    """Handle what arrives until ``until()``; resend on a stall; give up after GIVE_UP."""
    last = time.monotonic()
    while not until():
        events = selector.select(0.2)
        progress = any([key.data() for key, _ in events])
        now = time.monotonic()
        if progress:
            last = now
        elif now - last > STALL:
            if now - last > GIVE_UP:
                raise BenchError(f"no progress for {GIVE_UP:.0f} s while waiting for {what}")
            if on_stall:
                on_stall()


def setups(watchers: Watchers, selector) -> float:
    """SUBSCRIBE setups/s for N watchers."""
    start = last = time.monotonic()
    i = 0
    while len(watchers.accepted) < watchers.n or watchers.notifies < watchers.n:
        while i < watchers.n and len(watchers.sent) < WINDOW:
            watchers.subscribe(i)
            i += 1
        events = selector.select(0.2)
        now = time.monotonic()
        if any([key.data() for key, _ in events]):
            last = now
        elif now - last > GIVE_UP:
            raise BenchError(f"only {len(watchers.accepted)} of {watchers.n} subscriptions "
                             f"and {watchers.notifies} NOTIFYs after {GIVE_UP:.0f} s")
        elif now - last > STALL:
            watchers.resend()
            last = now - STALL / 2
    return watchers.n / (time.monotonic() - start)


class Phone:
    """The presentity's phone: REGISTERs (when asked) and PUBLISHes, answering challenges."""

    def __init__(self, port: int):
        self.agent, self.cseq, self.call_id = Agent(port), 0, f"pub-{uuid.uuid4().hex[:8]}"
        self.waiting: bytes | None = None
        self.done = True

    def send(self, method: str, headers: tuple = (), body: str = "", auth: str | None = None):
        self.cseq += 1
        uri = f"sip:{PRESENTITY}@{DOMAIN}" if method == "PUBLISH" else f"sip:{DOMAIN}"
        if auth:
            headers += (("Proxy-Authorization: " if method == "PUBLISH" else "Authorization: ")
                        + authorization(auth, PRESENTITY, method, uri),)
        self.last = (method, headers, body)
        self.done = False
        self.waiting = self.agent.request(method, uri, PRESENTITY, self.call_id, "phone",
                                          self.cseq, f"<sip:{PRESENTITY}@{DOMAIN}>", headers, body)

    def handle(self) -> bool:
        progress = False
        for start, headers, _, _ in self.agent.read():
            progress = True
            status = int(start.split()[1])
            challenge = headers.get("proxy-authenticate") or headers.get("www-authenticate")
            if status in (401, 407) and challenge:
                method, extra, body = self.last
                if any("Authorization:" in h for h in extra):
                    raise BenchError(f"{method} credentials refused: {start}")
                self.send(method, extra, body, auth=challenge)
            elif status >= 300:
                raise BenchError(f"{self.last[0]} refused: {start}")
            elif status >= 200:
                self.done, self.waiting = True, None
        return progress

    def resend(self) -> None:
        if self.waiting:
            self.agent.sock.sendto(self.waiting, self.agent.server)


def fan_out(watchers: Watchers, phone: Phone, selector, changes: int) -> float:
    """NOTIFYs/s: each change (a PUBLISH) reaches every watcher before the next one."""
    base = watchers.notifies
    start = time.monotonic()
    for n in range(changes):
        activity = "away" if n % 2 == 0 else "busy"
        phone.send("PUBLISH", ("Event: presence", "Expires: 3600",
                               "Content-Type: application/pidf+xml"),
                   PIDF.format(activity=activity, n=n))
        target = base + watchers.n * (n + 1)
        wait(selector, lambda: watchers.notifies >= target and phone.done,
             f"the NOTIFYs of change {n + 1}", lambda: (phone.resend(), None))
    return watchers.n * changes / (time.monotonic() - start)


def measure(server: Server, n: int, changes: int, register: bool) -> tuple[float, float]:
    watchers, phone = Watchers(server.port, n), Phone(server.port)
    selector = selectors.DefaultSelector()
    selector.register(watchers.agent.sock, selectors.EVENT_READ, watchers.handle)
    selector.register(phone.agent.sock, selectors.EVENT_READ, phone.handle)
    try:
        if register:
            phone.send("REGISTER", ("Expires: 3600",))
            wait(selector, lambda: phone.done, "the REGISTER", phone.resend)
        rate_setups = setups(watchers, selector)
        rate_notifies = fan_out(watchers, phone, selector, changes)
    finally:
        selector.close()
        watchers.agent.sock.close()
        phone.agent.sock.close()
    return rate_setups, rate_notifies


# ---- the servers -------------------------------------------------------------------------------
def start_convergence(tmp: Path, n: int) -> Server:
    port = free_udp_port()
    config = tmp / "convergence.toml"
    config.write_text(f'[server]\ndomain = "{DOMAIN}"\ndata_dir = "{tmp / "data"}"\n'
                      f'log_level = "warning"\n[sip]\nlisten = "127.0.0.1:{port}"\n'
                      f"max_subscriptions_per_account = {n}\n"
                      f"max_subscriptions_per_address = {n}\n"
                      '[http]\nlisten = "127.0.0.1:0"\n[xmpp]\nlisten = "127.0.0.1:0"\ns2s_listen = ""\n')
    command = [str(Path(sys.executable).parent / "convergence"), "--config", str(config)]
    for user in (PRESENTITY, WATCHER):
        done = subprocess.run(command + ["user", "add", user, "--password", PASSWORD],
                              capture_output=True, text=True)
        if done.returncode:
            raise BenchError(f"convergence user add {user} failed:\n{done.stdout}{done.stderr}")
    server = Server("Convergence", "Convergence (digest auth, one process)", command + ["serve"],
                    tmp / "convergence.log", port)
    server.wait_ready()
    return server


def start_kamailio(tmp: Path, with_auth: bool) -> Server:
    port = free_udp_port()
    db = tmp / "kamailio-db"
    db.mkdir()
    schemas = Path("/usr/share/kamailio/dbtext/kamailio")
    for table in KAMAILIO_TABLES:
        shutil.copy(schemas / table, db / table)
    auth_modules = auth = ""
    if with_auth:
        (db / "subscriber").write_text(
            "id(int,auto) username(string) domain(string) password(string)\n"
            + "".join(f"{i}:{user}:{DOMAIN}:{PASSWORD}\n"
                      for i, user in enumerate((PRESENTITY, WATCHER), 1)))
        auth_modules = KAMAILIO_AUTH_MODULES.format(db=db)
        auth = KAMAILIO_AUTH.format(domain=DOMAIN)
    config = tmp / "kamailio.cfg"
    config.write_text(KAMAILIO_CFG.format(port=port, domain=DOMAIN, db=db,
                                          modules=kamailio_modules_dir(),
                                          auth_modules=auth_modules, auth=auth))
    version = subprocess.run(["kamailio", "-v"], capture_output=True, text=True).stdout.split()[2:3]
    what = "MD5 digest auth" if with_auth else "no auth"
    server = Server("Kamailio", " ".join(["Kamailio", *version, f"({what}, 1 worker)"]),
                    ["kamailio", "-f", str(config), "-DD", "-E", "-m", "1024", "-M", "64",
                     "-Y", str(tmp)], tmp / "kamailio.log", port)
    server.wait_ready()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", default="100,1000", help="N values, comma-separated")
    parser.add_argument("--changes", type=int, default=10, help="presence changes per N")
    parser.add_argument("--only", choices=("convergence", "kamailio"))
    parser.add_argument("--kamailio-auth", action="store_true",
                        help="Kamailio challenges PUBLISH and initial SUBSCRIBEs too (db_text)")
    args = parser.parse_args()
    sizes = [int(v) for v in args.watchers.split(",")]
    servers = [args.only] if args.only else ["convergence", "kamailio"]
    if "kamailio" in servers and (shutil.which("kamailio") is None
                                  or not Path("/usr/share/kamailio/dbtext").exists()):
        print("kamailio (Debian packages kamailio, kamailio-presence-modules) is not installed: "
              "measuring Convergence only")
        servers = [s for s in servers if s != "kamailio"]
    results: dict[tuple[str, int], tuple[float, float]] = {}
    labels = {}
    try:
        for name in servers:
            for n in sizes:
                with tempfile.TemporaryDirectory(prefix=f"presence-{name}-") as folder:
                    tmp = Path(folder)
                    server = start_convergence(tmp, n) if name == "convergence" \
                        else start_kamailio(tmp, args.kamailio_auth)
                    labels[name] = server.label
                    try:
                        results[name, n] = measure(server, n, args.changes,
                                                   register=name == "convergence")
                    finally:
                        server.stop()
                print(f"{labels[name]}, N={n}: {results[name, n][0]:,.0f} SUBSCRIBE setups/s, "
                      f"{results[name, n][1]:,.0f} NOTIFYs/s", flush=True)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n| N watchers | server | SUBSCRIBE setups/s | NOTIFYs/s fanned out |")
    print("|---|---|---|---|")
    for (name, n), (s, f) in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        print(f"| {n:,} | {labels[name]} | {s:,.0f} | {f:,.0f} |")
    for n in sizes:
        if ("convergence", n) in results and ("kamailio", n) in results:
            ours, theirs = results["convergence", n], results["kamailio", n]
            print(f"N={n:,}: ours/Kamailio = {ours[0] / theirs[0]:.2f} (setups), "
                  f"{ours[1] / theirs[1]:.2f} (NOTIFYs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
