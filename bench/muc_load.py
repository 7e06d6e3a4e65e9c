"""Group chat load (XEP-0045): one room, ``--occupants`` occupants, messages fanned out per second,
Convergence against Prosody's mod_muc in the same run.

Run (from a checkout, with the project installed in the virtualenv):

    .venv/bin/python bench/muc_load.py             # 100 occupants, 10 senders, 10 s
    .venv/bin/python bench/muc_load.py --quick     # 40 occupants, 3 s

It reuses ``xmpp_load.py``'s client, accounts, certificate and server start-up (Prosody gets a
``Component "conference.localhost" "muc"``; Convergence has ``conference.localhost`` by default).
For each server: the occupants log in (STARTTLS, SCRAM-SHA-1, bind), ``user0`` creates the room
``bench@conference.localhost`` and accepts the default configuration (an instant room, §10.1.2),
then every other occupant joins without history and waits for its own presence (status 110).
Then ``--senders`` occupants each keep ``--window`` groupchat messages in flight for
``--duration`` s: a sender sends one more each time its own message comes back (the room echoes
it, §7.4). Every occupant counts the room's messages it receives, so **deliveries/s** is the
fan-out rate (messages/s × occupants); the body is the send time, so each delivery is a latency.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import xmpp_load
from xmpp_load import ClientProcess, cpu_seconds, make_certificate, serving

MUC = "http://jabber.org/protocol/muc"
ROOM = f"bench@conference.{xmpp_load.DOMAIN}"
SELF = re.compile(rb"<status\s+code=['\"]110['\"]")
CONFIGURED = re.compile(rb"<iq\b[^>]*\bid=(['\"])cfg\1[^>]*>|<iq\b[^>]*\bid=(['\"])cfg\2[^>]*/>")
STANZA = re.compile(rb"<message\b([^>]*)>(.*?)</message>", re.S)
FROM = re.compile(rb"\bfrom=['\"][^'\"/]*/([^'\"]+)['\"]")
BODY = re.compile(rb"<body>([^<]*)</body>")


def start_prosody_muc(tmp: Path, port: int):
    """Prosody as ``xmpp_load`` starts it, plus its MUC component."""
    config = tmp / "prosody.cfg.lua"
    config.write_text(xmpp_load.prosody_config(tmp, port)
                      + f'Component "conference.{xmpp_load.DOMAIN}" "muc"\n')
    return xmpp_load.subprocess.Popen(["prosody", "--config", str(config), "-F"],
                                      stdout=xmpp_load.subprocess.DEVNULL,
                                      stderr=xmpp_load.subprocess.STDOUT, cwd=tmp)


class MucProcess(ClientProcess):
    """A client process whose logged-in clients take part in the room."""

    def create(self):
        """``user0`` (if it is here) creates the room and accepts the default configuration."""
        first = next((c for c in self.clients if c.name == "user0"), None)
        if first is None:
            return 0
        first.sock.sendall(f"<presence to='{ROOM}/{first.name}'><x xmlns='{MUC}'/></presence>".encode())
        first.read_until(SELF)
        first.sock.sendall(f"<iq type='set' id='cfg' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                           "<x xmlns='jabber:x:data' type='submit'/></query></iq>".encode())
        first.read_until(CONFIGURED)
        return 1

    def join(self, concurrency):
        from gevent.pool import Pool

        def one(client):
            client.sock.sendall(f"<presence to='{ROOM}/{client.name}'><x xmlns='{MUC}'>"
                                "<history maxstanzas='0'/></x></presence>".encode())
            client.read_until(SELF)
        Pool(concurrency).map(one, [c for c in self.clients if c.name != "user0"])
        return len(self.clients)

    def fanout(self, senders, window, start, stop):
        """Every client counts the room's messages; those in ``senders`` keep ``window`` in flight."""
        import gevent

        def run(client, sending: bool):
            latencies = []
            head, tail = f"<message to='{ROOM}' type='groupchat'><body>".encode(), b"</body></message>"
            gevent.sleep(max(0.0, start - time.monotonic()))
            if sending:
                client.sock.sendall(b"".join(head + repr(time.monotonic()).encode() + tail
                                             for _ in range(window)))
            while (remaining := stop - time.monotonic()) > 0:
                client.sock.settimeout(remaining)
                try:
                    data = client.sock.recv(65536)
                except TimeoutError:
                    break
                if not data:
                    raise xmpp_load.ProtocolError(f"{client.jid}: connection closed")
                buf = client.buf + data
                now, own, end = time.monotonic(), 0, 0
                for match in STANZA.finditer(buf):
                    end = match.end()
                    body = BODY.search(match.group(2))
                    if body is None:
                        continue
                    try:
                        latencies.append(now - float(body.group(1)))
                    except ValueError:
                        continue
                    nick = FROM.search(match.group(1))
                    own += bool(nick and nick.group(1).decode() == client.name)
                client.buf = buf[end:]
                if sending and own and now < stop:
                    client.sock.sendall(b"".join(head + repr(now).encode() + tail for _ in range(own)))
            return latencies

        jobs = [gevent.spawn(run, c, c.name in senders) for c in self.clients]
        gevent.joinall(jobs, raise_error=True)
        return [job.value for job in jobs]


def measure(name: str, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"muc-load-{name.lower()}-"))
    try:
        make_certificate(tmp)
        xmpp_load.SERVERS[name][0](tmp, args.occupants)
        with serving(name, tmp, args.procs, MucProcess) as (proc, workers, login):
            login(args.occupants, args.concurrency, keep=True)
            if sum(workers.run("create", lambda i: {})) != 1:
                raise RuntimeError("user0 did not create the room")
            workers.run("join", lambda i: {"concurrency": max(1, args.concurrency // args.procs)})
            senders = {f"user{i}" for i in range(args.senders)}
            before, start = cpu_seconds(proc.pid), time.monotonic() + 0.5
            results = workers.run("fanout", lambda i: {"senders": senders, "window": args.window,
                                                       "start": start, "stop": start + args.duration})
            cpu = cpu_seconds(proc.pid) - before
        per_client = [len(c) for r in results for c in r]
        latencies = sorted(x for r in results for c in r for x in c)
        if len(per_client) != args.occupants or min(per_client) == 0:
            raise RuntimeError(f"{name}: an occupant got no message (of {len(per_client)})")
        deliveries = len(latencies) / args.duration
        print(f"{name}: {deliveries:,.0f} deliveries/s ({deliveries / args.occupants:,.0f} messages/s "
              f"to {args.occupants} occupants, each got {min(per_client)} to {max(per_client)}; "
              f"server CPU {100 * cpu / args.duration:.0f} % busy)",
              flush=True)
        return {"deliveries": deliveries, "messages": deliveries / args.occupants,
                "cpu": 1e6 * cpu / len(latencies), "p50": 1e3 * latencies[len(latencies) // 2],
                "p99": 1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


METRICS = [  # key, label, format, True if higher is better
    ("deliveries", "room messages delivered/s (fan-out)", "{:,.0f}", True),
    ("messages", "room messages sent/s", "{:,.0f}", True),
    ("cpu", "server CPU per delivery (µs)", "{:.1f}", False),
    ("p50", "latency p50 (ms)", "{:.1f}", False),
    ("p99", "latency p99 (ms)", "{:.1f}", False),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["prosody", "convergence"], help="measure one server only")
    parser.add_argument("--occupants", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10, help="occupants that send")
    parser.add_argument("--window", type=int, default=2, help="messages each sender keeps in flight")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=50, help="logins and joins at once")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--quick", action="store_true", help="--occupants 40 --duration 3")
    args = parser.parse_args()
    if args.quick:
        args.occupants, args.duration = 40, 3
    xmpp_load.SERVERS["Prosody"] = (xmpp_load.setup_prosody, start_prosody_muc, "prosody.log")
    servers = {"convergence": ["Convergence"], "prosody": ["Prosody"]}.get(args.only,
                                                                          ["Convergence", "Prosody"])
    if "Prosody" in servers and not shutil.which("prosody"):
        sys.exit("prosody is not on PATH (apt-get install prosody), or run with --only convergence")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{os.cpu_count()} CPUs shared by the server and {args.procs} client processes; "
          f"{args.occupants} occupants, {args.senders} senders, window {args.window}, "
          f"{args.duration:g} s; room {ROOM}")
    results = {}
    for name in servers:
        try:
            results[name] = measure(name, args)
        except RuntimeError as exc:
            print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
    names = list(results)
    print(f"\n{'metric':<38}" + "".join(f"{n:>13}" for n in names)
          + (f"{'ours/Prosody':>14}  better" if len(names) == 2 else ""))
    for key, label, fmt, higher in METRICS:
        row = f"{label:<38}" + "".join(f"{fmt.format(results[n][key]):>13}" for n in names)
        if len(names) == 2:
            row += f"{results['Convergence'][key] / results['Prosody'][key]:>13.2f}×  " \
                   f"{'higher' if higher else 'lower'}"
        print(row)
    sys.exit(0 if len(results) == len(servers) else 1)


if __name__ == "__main__":
    main()
