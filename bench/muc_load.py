"""Group chat load (XEP-0045): one room, ``--occupants`` occupants, messages/s fanned out, against
Prosody's MUC in the same run.

Run (from a checkout, with the project installed in the virtualenv):

    .venv/bin/python bench/muc_load.py               # Convergence and Prosody, then ours/Prosody
    .venv/bin/python bench/muc_load.py --quick       # 30 occupants, 3 s
    .venv/bin/python bench/muc_load.py --only convergence --occupants 200 --senders 20

For each server (started on free loopback ports in a temporary directory, as bench/xmpp_load.py
does, with the same accounts and certificate; Prosody 0.12 with a ``muc`` component on
``conference.localhost``, Convergence with its default ``[xmpp] muc_domain``):

1. ``--occupants`` clients log in (STARTTLS, SCRAM-SHA-1, bind); the first creates the room
   ``bench@conference.localhost`` and makes it an instant room (XEP-0045 §10.1.2, the owner
   submits an empty form), then the others join it, each waiting for its self-presence (status
   110) and asking for no history.
2. **fan-out**: ``--senders`` of them post ``<message type='groupchat'/>`` for ``--duration`` s, each
   keeping ``--window`` of its own messages in flight (it posts another when the room reflects one
   of its own back, XEP-0045 §7.4). Every occupant counts the room messages it receives; the body
   is the send time, so each delivery gives a latency.

Figures: room messages/s (posted messages that reached the occupants: deliveries ÷ occupants),
deliveries/s, server CPU per delivery, latency p50/p99. Target of issue 15 on the 2-core machine:
room messages/s ≥ 1.0× Prosody's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import xmpp_load  # noqa: E402  (clients, accounts, servers)

ROOM = f"bench@conference.{xmpp_load.DOMAIN}"
MUC = "http://jabber.org/protocol/muc"
SELF_PRESENCE = xmpp_load.re.compile(rb"<presence\b[^>]*>(?:(?!</presence>).)*?code=['\"]110['\"]"
                                     rb"(?:(?!</presence>).)*</presence>", xmpp_load.re.S)
CONFIGURED = xmpp_load.re.compile(rb"<iq\b[^>]*\bid=(['\"])config\1[^>]*>|<iq\b[^>]*\bid=(['\"])config\2")
ROOM_BODY = xmpp_load.re.compile(rb"<message\b[^>]*type=['\"]groupchat['\"][^>]*>.*?<body>([^<]*)</body>",
                                 xmpp_load.re.S)


class Occupant(xmpp_load.Client):
    def join(self, owner: bool) -> None:
        nick = self.name
        self.sock.sendall(f"<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'><history maxstanzas='0'/>"
                          f"</x></presence>".encode())
        self.read_until(SELF_PRESENCE)
        if owner:  # XEP-0045 §10.1.2: an instant room, the default configuration accepted
            self.sock.sendall(f"<iq type='set' id='config' to='{ROOM}'><query xmlns='{MUC}#owner'>"
                              "<x xmlns='jabber:x:data' type='submit'/></query></iq>".encode())
            self.read_until(CONFIGURED)

    def fan_out(self, sends: bool, window: int, start: float, stop: float) -> list[float]:
        """Post (if ``sends``) with ``window`` in flight; return the latencies of every room
        message received."""
        mine = (f"/{self.name}'".encode(), f'/{self.name}"'.encode())
        head, tail = f"<message to='{ROOM}' type='groupchat'><body>".encode(), b"</body></message>"
        latencies = []
        for now, received in self.exchange(start, stop, b"</message>"):
            own = window if not received else 0
            for match in ROOM_BODY.finditer(received):
                latencies.append(now - float(match.group(1)))
                stanza_head = match.group(0)[:match.group(0).index(b">") + 1]
                own += any(m in stanza_head for m in mine)
            if sends and own and now < stop:
                self.sock.sendall(b"".join(head + repr(now).encode() + tail for _ in range(own)))
        return latencies


class RoomProcess(xmpp_load.ClientProcess):
    def login(self, indexes, concurrency, keep, sm=False):
        result = super().login(indexes, concurrency, keep, sm)
        self.clients = [self._occupant(c) for c in self.clients]
        return result

    @staticmethod
    def _occupant(client):
        client.__class__ = Occupant
        return client

    def create(self):
        self.clients[0].join(owner=True)
        return 1

    def join(self, skip_first: bool, concurrency: int):
        from gevent.pool import Pool
        Pool(concurrency).map(lambda c: c.join(owner=False), self.clients[skip_first:])
        return len(self.clients)

    def fan_out(self, senders, window, start, stop):
        import gevent
        jobs = [gevent.spawn(c.fan_out, c.name in senders, window, start, stop) for c in self.clients]
        gevent.joinall(jobs, raise_error=True)
        return [x for job in jobs for x in job.value]


def prosody_start(tmp: Path, port: int) -> subprocess.Popen:
    config = tmp / "prosody.cfg.lua"
    config.write_text(xmpp_load.prosody_config(tmp, port)
                      + f'Component "conference.{xmpp_load.DOMAIN}" "muc"\n')
    return subprocess.Popen(["prosody", "--config", str(config), "-F"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=tmp)


SERVERS = {"Convergence": xmpp_load.start_convergence, "Prosody": prosody_start}


def measure(name: str, args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"muc-load-{name.lower()}-"))
    try:
        xmpp_load.make_certificate(tmp)
        xmpp_load.SERVERS[name][0](tmp, args.occupants)
        with xmpp_load.serving(name, tmp, args.procs, RoomProcess, SERVERS[name]) as (proc, workers, login):
            login(args.occupants, args.concurrency, keep=True)
            workers.pipes[0].send(("create", {}))  # user0 (process 0) makes the room, then the others join
            if workers.pipes[0].recv()[0] != "ok":
                raise RuntimeError(f"{name}: the room could not be created")
            workers.run("join", lambda i: {"skip_first": i == 0, "concurrency": args.concurrency})
            senders = [f"user{i}" for i in range(args.senders)]
            before, start = xmpp_load.cpu_seconds(proc.pid), time.monotonic() + 0.5
            results = workers.run("fan_out", lambda i: {"senders": senders, "window": args.window,
                                                        "start": start, "stop": start + args.duration})
            cpu = xmpp_load.cpu_seconds(proc.pid) - before
        latencies = sorted(x for r in results for x in r)
        if not latencies:
            raise RuntimeError(f"{name}: no room message was delivered")
        deliveries = len(latencies) / args.duration
        print(f"{name}: {deliveries / args.occupants:,.0f} room messages/s to {args.occupants} "
              f"occupants (server CPU {100 * cpu / args.duration:.0f} % busy)", flush=True)
        return {"messages": deliveries / args.occupants, "deliveries": deliveries,
                "cpu": 1e6 * cpu / len(latencies), **xmpp_load.percentiles(latencies)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


METRICS = [  # key, label, format, True if higher is better
    ("messages", "room messages/s (fanned out)", "{:,.0f}", True),
    ("deliveries", "deliveries/s", "{:,.0f}", True),
    ("cpu", "server CPU per delivery (µs)", "{:.0f}", False),
    ("p50", "latency p50 (ms)", "{:.1f}", False),
    ("p99", "latency p99 (ms)", "{:.1f}", False),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["prosody", "convergence"], help="measure one server only")
    parser.add_argument("--occupants", type=int, default=100, help="occupants of the room")
    parser.add_argument("--senders", type=int, default=10, help="occupants that post")
    parser.add_argument("--window", type=int, default=5, help="own messages each sender keeps in flight")
    parser.add_argument("--duration", type=float, default=10, help="seconds of posting")
    parser.add_argument("--concurrency", type=int, default=50, help="logins and joins in progress at once")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--quick", action="store_true", help="--occupants 30 --senders 5 --duration 3")
    args = parser.parse_args()
    if args.quick:
        args.occupants, args.senders, args.duration = 30, 5, 3
    servers = {"convergence": ["Convergence"], "prosody": ["Prosody"]}.get(args.only, list(SERVERS))
    if "Prosody" in servers and not shutil.which("prosody"):
        sys.exit("prosody is not on PATH: install the Debian package 'prosody', or use --only convergence")
    print(f"{os.cpu_count()} CPUs shared by the server and {args.procs} client processes; room {ROOM}, "
          f"{args.occupants} occupants, {args.senders} senders with {args.window} in flight each, "
          f"{args.duration:g} s; load average {os.getloadavg()[0]:.1f}")
    results, failed = {}, False
    for name in servers:
        try:
            results[name] = measure(name, args)
        except RuntimeError as exc:
            failed = True
            print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
    if results:
        xmpp_load.print_table(results, METRICS)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
