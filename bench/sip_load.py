"""SIP load: REGISTER/s and MESSAGE relays/s of Convergence and of Kamailio, driven by sipp.

Run: python bench/sip_load.py [--only convergence|kamailio] [--duration S] [--rates 500,1000,...]
     [--quick] [--kamailio-auth] [--baseline-tree DIR] [--workers N [--database URL] [--redis URL]]

Needs `sipp` (Debian package sip-tester) and `kamailio` (Debian package kamailio) on PATH and
Convergence installed in the running Python (the `convergence` command beside sys.executable).

Both servers run on free UDP ports on 127.0.0.1, started by this script: Kamailio with a config
written here (registrar + usrloc in memory, `t_relay` of MESSAGE to registered users; no digest
auth unless --kamailio-auth, which checks MD5 digest against a db_text subscriber table), and
Convergence with `convergence serve` on a fresh SQLite database, where digest auth is always on,
with `[sip] digest_algorithms = ["MD5", "SHA-256"]`: sipp 3.6 (Debian 12) computes only MD5 and
answers the first challenge only, so MD5 is offered first (the default puts SHA-256 first, RFC 8760
§2.4). `--baseline-tree DIR` also runs Convergence from another source tree (a copy of an older
checkout: its core/, plugins/ and migrations/), before the current one, for before/after figures
measured side by side. `--workers N` also runs Convergence with N worker processes sharing the UDP
port (`[server] workers`, on a PostgreSQL schema of its own and a Redis key prefix of its own, as a
cluster must), after the single process, and prints N workers / 1 process (issue 14: ≥ 1.6×).
The kernel hands each worker the datagrams of some source ports: with one sipp sender (the
default) every measured call reaches one worker; `--senders K` sends them from K sipp processes,
each on a port of its own with 1/K of the rate, for every server measured.
For each server and test the call rate steps up (default 500 … 24000 calls/s, `--duration`
seconds each). A step's rate is its successful calls over the time from its first request to its
last answer, so a server that falls behind the target is measured at the pace it keeps. Stepping
stops at the first step with ≥ 1 % failed calls (lost or refused) or below 90 % of its target
(saturated). The result is the best rate among the steps with < 1 % failures, and the table at
the end gives ours/Kamailio.

- REGISTER: sipp registers the users round-robin (each call: REGISTER, on 401 REGISTER again
  with digest credentials, expect 200). A call is one successful registration.
- MESSAGE: receivers are registered from one UDP port where a sipp UAS answers every MESSAGE
  with 200; a sipp UAC sends MESSAGE from the senders to the receivers through the server (on
  407 it sends again with credentials). A relay counts when the sender got its 200 and the UAS
  answered the MESSAGE (the smaller of the two counts).

sipp, the server and the UAS share the machine's cores, so the figures are for this machine.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "bench.test"
PASSWORD = "bench-password"
SENDERS = [f"s{i}" for i in range(1, 21)]  # also the users of the REGISTER test
RECEIVERS = [f"r{i}" for i in range(1, 11)]
RECV_TIMEOUT_MS = 3000
MAX_FAILURES = 0.01
MIN_RATE_KEPT = 0.9

# ---- sipp scenarios ---------------------------------------------------------------------------
# CSV fields: 0 = user, 1 = "[authentication username=… password=…]" (sipp expands it into an
# Authorization or Proxy-Authorization header after a 401 or 407), 2 = receiver (MESSAGE only).

REGISTER = """REGISTER sip:{domain} SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:[field0]@{domain}>;tag=[pid]-[call_number]
To: <sip:[field0]@{domain}>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
Expires: 3600
{auth}Content-Length: 0

"""

MESSAGE = """MESSAGE sip:[field2]@{domain} SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:[field0]@{domain}>;tag=[pid]-[call_number]
To: <sip:[field2]@{domain}>
Call-ID: [call_id]
CSeq: {cseq} MESSAGE
Content-Type: text/plain
{auth}Content-Length: [len]

bench message [call_number]"""

ANSWER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer">
  <recv request="MESSAGE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def client_scenario(name: str, request: str) -> str:
    """Send ``request``; if challenged (401/407), send it again with credentials; expect 200."""
    first = request.format(domain=DOMAIN, cseq=1, auth="")
    second = request.format(domain=DOMAIN, cseq=2, auth="[field1]\n")
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
  <send retrans="500"><![CDATA[
{first}]]></send>
  <recv response="100" optional="true"/>
  <recv response="401" optional="true" auth="true" next="auth"/>
  <recv response="407" optional="true" auth="true" next="auth"/>
  <recv response="200" next="done"/>
  <label id="auth"/>
  <send retrans="500"><![CDATA[
{second}]]></send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <label id="done"/>
</scenario>
"""


# ---- servers ----------------------------------------------------------------------------------

KAMAILIO_CFG = """#!KAMAILIO
debug=-1
log_stderror=yes
fork=yes
children={children}
maxbuffer=4194304
disable_tcp=yes
auto_aliases=no
alias="{domain}"
listen=udp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
{auth_modules}
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (method == "REGISTER") {{
{register_auth}        save("location");
        exit;
    }}
    if (method != "MESSAGE") {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
{message_auth}    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""

KAMAILIO_AUTH_MODULES = """loadmodule "db_text.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "text://{db}")
modparam("auth_db", "calculate_ha1", yes)
modparam("auth_db", "password_column", "password")
modparam("auth_db", "load_credentials", "")
"""
KAMAILIO_REGISTER_AUTH = """        if (!www_authenticate("{domain}", "subscriber")) {{
            www_challenge("{domain}", "1");
            exit;
        }}
"""
KAMAILIO_MESSAGE_AUTH = """    if (!proxy_authenticate("{domain}", "subscriber")) {{
        proxy_challenge("{domain}", "1");
        exit;
    }}
"""


class BenchError(Exception):
    """A reason to stop, for the user (one paragraph)."""


def free_udp_port() -> int:
    """A UDP port of 127.0.0.1 that is free for TCP too (Convergence listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def answers_register(port: int, timeout: float) -> bool:
    """Does something on 127.0.0.1:port answer a REGISTER (a binding query) with any response?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.25)
        me = s.getsockname()[1]
        request = (f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:probe@{DOMAIN}>;tag=probe\r\n"
                   f"To: <sip:probe@{DOMAIN}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
                   "CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n").encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.sendto(request, ("127.0.0.1", port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except OSError:  # timeout, or ICMP port unreachable while nothing listens yet
                time.sleep(0.1)
    return False


class Server:
    """A server under test: ``name``, ``label`` (for the table), ``port``; ``stop()``."""

    def __init__(self, name: str, label: str, command: list[str], log: Path, port: int):
        self.name, self.label, self.port, self.log = name, label, port, log
        with log.open("w") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, what: str = "", timeout: float = 30) -> None:
        """Wait until the server answers a REGISTER: started, or done with an earlier backlog."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if answers_register(self.port, 1.0):
                return
        code = self.proc.poll()
        self.stop()
        tail = "".join(self.log.read_text(errors="replace").splitlines(True)[-15:])
        how = f"exited with status {code}" if code is not None else f"within {timeout:.0f} s"
        raise BenchError(f"{self.name} did not answer REGISTER on udp 127.0.0.1:{self.port}: "
                         f"{how}{what}.\n--- its log ends with:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # Kamailio's workers are in its group
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_kamailio(tmp: Path, with_auth: bool) -> Server:
    port = free_udp_port()
    children = os.cpu_count() or 2
    values = dict(domain=DOMAIN, port=port, children=children,
                  modules=kamailio_modules_dir(), auth_modules="", register_auth="", message_auth="")
    if with_auth:
        db = tmp / "kamailio-db"
        db.mkdir()
        (db / "version").write_text("table_name(string) table_version(int)\nsubscriber:7\n")
        (db / "subscriber").write_text(
            "id(int,auto) username(string) domain(string) password(string)\n"
            + "".join(f"{i}:{user}:{DOMAIN}:{PASSWORD}\n"
                      for i, user in enumerate(SENDERS + RECEIVERS, 1)))
        values.update(auth_modules=KAMAILIO_AUTH_MODULES.format(db=db),
                      register_auth=KAMAILIO_REGISTER_AUTH.format(domain=DOMAIN),
                      message_auth=KAMAILIO_MESSAGE_AUTH.format(domain=DOMAIN))
    config = tmp / "kamailio.cfg"
    config.write_text(KAMAILIO_CFG.format(**values))
    version = subprocess.run(["kamailio", "-v"], capture_output=True, text=True).stdout.split()[2:3]
    auth = "MD5 digest auth" if with_auth else "no auth"
    server = Server("Kamailio", " ".join(["Kamailio", *version, f"({auth})"]),
                    ["kamailio", "-f", str(config), "-DD", "-E", "-m", "1024", "-M", "16",
                     "-Y", str(tmp)], tmp / "kamailio.log", port)
    server.wait_ready()
    print(f"Kamailio: udp 127.0.0.1:{port}, {children} UDP worker processes, usrloc in memory, "
          f"t_relay; {auth}")
    return server


def kamailio_modules_dir() -> str:
    found = next(Path("/usr/lib").glob("*/kamailio/modules"), None)
    if found is None:
        raise BenchError("no /usr/lib/*/kamailio/modules: is the Debian package kamailio installed?")
    return f"{found}/"


#: Runs ``convergence`` with the packages of another source tree (``--baseline-tree``): argv[1]
#: is the tree, the rest the command line.
FROM_TREE = """import importlib.util, sys
from pathlib import Path
tree = Path(sys.argv.pop(1))
packages = {"convergence": tree / "core", "convergence.plugins": tree / "plugins",
            "convergence.migrations": tree / "migrations"}
class Tree:
    def find_spec(self, name, path=None, target=None):
        if name in packages:
            folder = packages[name]
            return importlib.util.spec_from_file_location(
                name, folder / "__init__.py", submodule_search_locations=[str(folder)])
sys.meta_path.insert(0, Tree())
from convergence.main import main
sys.exit(main())
"""


def start_convergence(tmp: Path, tree: Path | None = None, workers: int = 1, database: str = "",
                      redis: str = "") -> Server:
    """``convergence serve`` on SQLite, or with ``workers`` processes on ``database`` (a
    PostgreSQL URL) and ``redis`` (a key prefix of its own): the cluster configuration."""
    port = free_udp_port()
    config = tmp / "convergence.toml"
    cluster = (f'database = "{database}"\nworkers = {workers}\n', f'[cluster]\nredis = "{redis}"\n'
               f'prefix = "sipbench:{uuid.uuid4().hex[:8]}:"\n') if workers > 1 else ("", "")
    config.write_text(f'[server]\ndomain = "{DOMAIN}"\ndata_dir = "{tmp / "data"}"\n{cluster[0]}'
                      f'log_level = "warning"\n[sip]\nlisten = "127.0.0.1:{port}"\n'
                      'digest_algorithms = ["MD5", "SHA-256"]\n'
                      '[http]\nlisten = "127.0.0.1:0"\n[xmpp]\nlisten = "127.0.0.1:0"\ns2s_listen = ""\n'
                      + cluster[1])
    program = ([sys.executable, "-c", FROM_TREE, str(tree)] if tree
               else [str(Path(sys.executable).parent / "convergence")])
    command = program + ["--config", str(config)]
    add_users(command)
    label = f"Convergence {'from ' + tree.name if tree else ''}".rstrip()
    how = (f"{workers} workers, PostgreSQL + Redis" if workers > 1 else "single process")
    server = Server("Convergence", f"{label} (digest auth, {how})", command + ["serve"],
                    tmp / "convergence.log", port)
    server.wait_ready(" (is the SIP plugin listening yet? `convergence serve` must open [sip] listen)")
    print(f"{label}: udp 127.0.0.1:{port}, {how if workers > 1 else 'one process, SQLite'}, digest "
          'auth (401/407) with digest_algorithms = ["MD5", "SHA-256"] (sipp 3.6 answers only the '
          "first challenge, in MD5 only)")
    return server


def add_users(command: list[str]) -> None:
    """``convergence user add`` for every sender and receiver (the first alone: it migrates)."""
    def add(user):
        done = subprocess.run(command + ["user", "add", user, "--password", PASSWORD],
                              capture_output=True, text=True)
        if done.returncode:
            raise BenchError(f"convergence user add {user} failed:\n{done.stdout}{done.stderr}")
    users = SENDERS + RECEIVERS
    print(f"creating {len(users)} Convergence accounts …", flush=True)
    add(users[0])
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        list(pool.map(add, users[1:]))


# ---- running sipp -----------------------------------------------------------------------------

@dataclass
class Step:
    target: int
    calls: int
    ok: int
    seconds: float
    refused: int = 0  # sender calls answered otherwise than planned (a 403 of the failure limiter…)

    @property
    def failed(self) -> float:
        return 1 - self.ok / self.calls if self.calls else 1.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def passed(self) -> bool:
        return self.failed < MAX_FAILURES

    @property
    def saturated(self) -> bool:
        """The server answered slower than sipp sent: a higher target cannot do better."""
        return self.rate < MIN_RATE_KEPT * self.target


def last_stats(path: Path) -> dict[str, str]:
    """The last complete row of a sipp ``-trace_stat`` CSV: ``;``-separated, a header row first,
    every row ending in ``;``; a row cut short (sipp still writing) is skipped."""
    text = path.read_text(errors="replace") if path.exists() else ""
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    header = rows[0] if rows else []
    complete = [row for row in rows[1:] if len(row) >= len(header) - 1]
    if "SuccessfulCall(C)" not in header or not complete:
        raise BenchError(f"sipp wrote no statistics to {path}")
    return dict(zip(header, complete[-1]))


class Sipp:
    """sipp runs against one server: writes the scenarios and CSV files to ``tmp``."""

    def __init__(self, tmp: Path, port: int, senders: int = 1):
        self.tmp, self.port, self.runs = tmp, port, 0
        #: the measured calls' sipp processes, each on a UDP port of its own (the kernel hands all
        #: of one port's datagrams to one worker); one: sipp's own port, as before
        self.ports = [free_udp_port() for _ in range(senders)] if senders > 1 else [None]
        (tmp / "register.xml").write_text(client_scenario("register", REGISTER))
        (tmp / "message.xml").write_text(client_scenario("message", MESSAGE))
        (tmp / "answer.xml").write_text(ANSWER)
        write_csv(tmp / "senders.csv", [credentials(user) for user in SENDERS])
        write_csv(tmp / "receivers.csv", [credentials(user) for user in RECEIVERS])
        write_csv(tmp / "messages.csv", [f"{credentials(user)};{RECEIVERS[i % len(RECEIVERS)]}"
                                         for i, user in enumerate(SENDERS)])

    def command(self, scenario: str, *args: str) -> tuple[list[str], Path]:
        self.runs += 1
        stats = self.tmp / f"sipp-{self.runs}.csv"
        return (["sipp", f"127.0.0.1:{self.port}", "-i", "127.0.0.1", "-sf", str(self.tmp / scenario),
                 "-nd", "-nostdin", "-trace_stat", "-stf", str(stats), "-fd", "1",
                 "-buff_size", "4194304", "-max_recv_loops", "10000", "-max_sched_loops", "10000",
                 "-recv_timeout", str(RECV_TIMEOUT_MS), *args], stats)

    def run(self, scenario: str, *args: str, timeout: float) -> dict[str, str]:
        command, stats = self.command(scenario, *args)
        log = stats.with_suffix(".log")
        try:
            with log.open("w") as out:
                code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise BenchError(f"sipp ({scenario}) did not finish within {timeout:.0f} s") from None
        if code not in (0, 1):  # 0: every call succeeded, 1: some failed; else sipp itself failed
            raise BenchError(sipp_failure(log))
        return last_stats(stats)

    def calls(self, scenario: str, csv: Path, rate: int, calls: int, duration: float) -> tuple[int, float, int]:
        """``calls`` calls of ``scenario`` at ``rate`` per second, shared by the sender processes
        (``ports``): (successful calls, seconds — the slowest process's —, refused calls)."""
        n = len(self.ports)
        runs = []
        for i, port in enumerate(self.ports):
            command, stats = self.command(scenario, "-inf", str(csv), "-r", str(max(1, rate // n)),
                                          "-m", str(calls // n + (i < calls % n)),
                                          *(["-p", str(port)] if port else []))
            out = stats.with_suffix(".log").open("w")
            runs.append((subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT), stats, out))
        try:
            for proc, stats, out in runs:
                code = proc.wait(timeout=duration * 4 + 30)
                if code not in (0, 1):
                    raise BenchError(sipp_failure(stats.with_suffix(".log")))
        except subprocess.TimeoutExpired:
            raise BenchError(f"sipp ({scenario}) did not finish within {duration * 4 + 30:.0f} s") from None
        finally:
            for proc, _, out in runs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                out.close()
        results = [last_stats(stats) for _, stats, _ in runs]
        return (sum(int(r["SuccessfulCall(C)"]) for r in results),
                max(step_seconds(r, duration) for r in results), sum(refused(r) for r in results))


def sipp_failure(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if line.strip() and not line.startswith(("-", " ", "Resolving remote host"))]
    return "sipp failed:\n" + "\n".join(lines[-8:])


def write_csv(path: Path, rows: list[str]) -> None:
    path.write_text("SEQUENTIAL\n" + "".join(row + "\n" for row in rows))


def credentials(user: str) -> str:
    return f"{user};[authentication username={user} password={PASSWORD}]"


def run_steps(label: str, rates: list[int], step) -> Step | None:
    """``step(rate)`` for each rate until one fails or saturates; the best passing Step."""
    best = None
    for rate in rates:
        result = step(rate)
        if result.passed:
            best = result if best is None or result.rate > best.rate else best
        verdict = ("ok" if result.passed else f"≥ {MAX_FAILURES:.0%} failed") + (
            f", saturated (< {MIN_RATE_KEPT:.0%} of the target)" if result.saturated else "")
        print(f"  {label:<9} target {rate:>6}/s: {result.ok:>7} of {result.calls:>7} ok "
              f"({result.failed:6.2%} failed: {result.refused} answered otherwise, the rest lost), "
              f"{result.rate:>8,.0f}/s  {verdict}", flush=True)
        if not result.passed or result.saturated:
            break
    return best


def refused(stats: dict[str, str]) -> int:
    """Calls that got a response the scenario did not expect (a 403 from the per-source failure
    limiter would show here: all sipp traffic comes from 127.0.0.1), rather than none in time."""
    return int(stats.get("FailedUnexpectedMessage(C)") or 0)


def step_seconds(stats: dict[str, str], duration: float) -> float:
    """Seconds the calls took: sipp's elapsed time (calls / cumulative call rate), less the receive
    timeout that a lost response added at the end, and never less than the planned duration."""
    calls, rate = int(stats["OutgoingCall(C)"]), float(stats["CallRate(C)"] or 0)
    elapsed = calls / rate if rate else duration
    if int(stats["FailedCall(C)"]):
        elapsed -= RECV_TIMEOUT_MS / 1000
    return max(duration, elapsed)


def bench_register(sipp: Sipp, rates: list[int], duration: float) -> Step | None:
    def step(rate):
        calls = int(rate * duration)
        return Step(rate, calls, *sipp.calls("register.xml", sipp.tmp / "senders.csv", rate, calls, duration))
    return run_steps("REGISTER", rates, step)


def bench_message(sipp: Sipp, rates: list[int], duration: float) -> Step | None:
    tmp = sipp.tmp
    uas_port = free_udp_port()
    registered = sipp.run("register.xml", "-inf", str(tmp / "receivers.csv"), "-p", str(uas_port),
                          "-m", str(len(RECEIVERS)), "-r", "100", timeout=30)
    if int(registered["SuccessfulCall(C)"]) != len(RECEIVERS):
        raise BenchError(f"only {registered['SuccessfulCall(C)']} of {len(RECEIVERS)} receivers "
                         "registered")

    def step(rate):
        calls = int(rate * duration)
        command, uas_stats = sipp.command("answer.xml", "-p", str(uas_port))
        with uas_stats.with_suffix(".log").open("w") as out:
            uas = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.3)  # let the UAS bind its port
            ok, seconds, refusals = sipp.calls("message.xml", tmp / "messages.csv", rate, calls, duration)
        finally:
            uas.send_signal(signal.SIGUSR1)  # sipp: finish open calls, dump statistics, exit
            try:
                uas.wait(RECV_TIMEOUT_MS / 1000 + 10)
            except subprocess.TimeoutExpired:
                uas.kill()
                uas.wait()
        answered = int(last_stats(uas_stats)["SuccessfulCall(C)"])
        return Step(rate, calls, min(ok, answered), seconds, refusals)
    return run_steps("MESSAGE", rates, step)


# ---- main -------------------------------------------------------------------------------------

def check_tools(names: list[str]) -> None:
    packages = {"sipp": "sip-tester", "kamailio": "kamailio"}
    missing = [name for name in names if name in packages and not shutil.which(name)]
    if missing:
        raise BenchError("not on PATH: " + ", ".join(missing) + ". Install the Debian package(s): "
                         "apt-get install " + " ".join(packages[name] for name in missing))
    if "convergence" in names and not (Path(sys.executable).parent / "convergence").exists():
        raise BenchError(f"no `convergence` command beside {sys.executable}: run this script with the "
                         "Python of the virtualenv where Convergence is installed")


def bench_server(name: str, args, rates: list[int]) -> tuple[str, dict[str, Step | None]]:
    with tempfile.TemporaryDirectory(prefix=f"sip-load-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        drop = None
        if name == "kamailio":
            server = start_kamailio(tmp, args.kamailio_auth)
        elif name == "workers":
            from convergence.testing import create_schema
            url, drop = create_schema(args.database)
            server = start_convergence(tmp, None, args.workers, url, args.redis)
        else:
            server = start_convergence(tmp, args.baseline_tree if name == "baseline" else None)
        try:
            sipp = Sipp(tmp, server.port, args.senders)
            results = {"REGISTER": bench_register(sipp, rates, args.duration)}
            server.wait_ready(" after the REGISTER test")
            results["MESSAGE"] = bench_message(sipp, rates, args.duration)
        finally:
            server.stop()
            if drop is not None:
                drop()
        return server.label, results


def print_table(results: dict[str, tuple[str, dict[str, Step | None]]], args, rates) -> None:
    """One row per server, one column per test; ``≥`` marks a figure every step passed."""
    def figure(step):
        if not step:
            return f"none < {MAX_FAILURES:.0%}"
        return ("≥ " if step.target == rates[-1] and not step.saturated else "") + f"{step.rate:,.0f}"
    tests = ("REGISTER", "MESSAGE")
    rows = [(label, [figure(steps[test]) for test in tests]) for label, steps in results.values()]
    theirs = results["kamailio"][1] if "kamailio" in results else None
    def ratio(ours, base):
        return [f"{ours[test].rate / base[test].rate:.2f}×" if ours[test] and base[test] else "–"
                for test in tests]
    for name in ("baseline", "convergence", "workers"):
        if theirs and name in results:
            label = {"baseline": "baseline", "convergence": "ours", "workers": f"ours ×{args.workers} workers"}[name]
            rows.append((f"{label}/Kamailio", ratio(results[name][1], theirs)))
    if "workers" in results and "convergence" in results:
        rows.append((f"{args.workers} workers / 1 process", ratio(results["workers"][1], results["convergence"][1])))
    width = max(len(label) for label, _ in rows) + 2
    print(f"\nSIP over UDP on 127.0.0.1, {os.cpu_count()} CPUs shared by the server and sipp; steps of "
          f"{args.duration:g} s at {', '.join(map(str, rates))} calls/s; best rate with "
          f"< {MAX_FAILURES:.0%} failed calls")
    print(f"{'':<{width}}{'REGISTER/s':>14}{'MESSAGE relays/s':>20}")
    for label, figures in rows:
        print(f"{label:<{width}}{figures[0]:>14}{figures[1]:>20}")
    if any(figure.startswith("≥") for _, figures in rows for figure in figures):
        print("≥: the highest step passed; add higher --rates to find the limit")
    if theirs and len(results) > 1:
        print("target: ours/Kamailio ≥ 0.5× on both, Convergence in a single process")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["convergence", "kamailio"], help="benchmark one server")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step (default 5)")
    parser.add_argument("--rates", default="500,750,1000,1500,2000,3000,4000,6000,8000,10000,"
                                            "12000,14000,16000,20000,24000",
                        help="comma-separated call rates per second, in increasing order")
    parser.add_argument("--quick", action="store_true", help="2 s steps at 1000,4000,8000,16000 calls/s")
    parser.add_argument("--kamailio-auth", action="store_true",
                        help="Kamailio checks MD5 digest too (auth_db with a db_text table)")
    parser.add_argument("--baseline-tree", type=Path, metavar="DIR",
                        help="also run Convergence from this source tree (its core/, plugins/ and "
                             "migrations/), first: before/after figures in one run")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="also run Convergence with N worker processes (PostgreSQL + Redis, "
                             "[server] workers and a [cluster] table): 1 process and N side by side")
    parser.add_argument("--senders", type=int, default=1, metavar="K",
                        help="sipp processes sending the measured REGISTERs and MESSAGEs, each from a "
                             "UDP port of its own, for every server (default 1): the kernel hands each "
                             "port's datagrams to one worker, so one sender reaches one worker only")
    parser.add_argument("--database", default="postgresql+psycopg://127.0.0.1:5432/test",
                        help="PostgreSQL for --workers (a schema of its own, dropped afterwards)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for --workers")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rates = 2.0, "1000,4000,8000,16000"
    rates = [int(rate) for rate in args.rates.split(",")]
    names = [args.only] if args.only else ["convergence", "kamailio"]
    if args.baseline_tree and "convergence" in names:
        names.insert(0, "baseline")
    if args.workers > 1 and "convergence" in names:
        names.insert(names.index("convergence") + 1, "workers")
    results = {}
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          "(other work on the machine lowers every figure)")
    try:
        check_tools(["sipp"] + names)
        for name in names:
            print(f"\n== {name} ==", flush=True)
            try:
                results[name] = bench_server(name, args, rates)
            except BenchError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    if results:
        print_table(results, args, rates)
    return 0 if len(results) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
