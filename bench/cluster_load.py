"""Cluster load: XMPP messages/s with 1 worker and with 2 workers, side by side in one run (issue 14).

Run (from a checkout, with the project installed in the virtualenv, PostgreSQL and Redis up):

    .venv/bin/python bench/cluster_load.py                 # 1 worker, 1 worker + [cluster], 2 workers
    .venv/bin/python bench/cluster_load.py --clients 200 --duration 10

Each configuration is a fresh ``convergence serve`` on a PostgreSQL schema of its own (created and
dropped here, in ``--database``) and, for the cluster ones, a Redis key prefix of its own:

- ``1 worker``: one process, no ``[cluster]`` table: the single-process path;
- ``1 worker + cluster``: one process that is a cluster member (heartbeat, directory writes on
  every login and presence; every message is still delivered in-process): what joining costs;
- ``2 workers``: the supervisor and two workers sharing the XMPP port (SO_REUSEPORT); the kernel
  places each client on a worker, so about half the pairs talk across workers (Redis hand-off).
  Hand-offs not confirmed within ``handoff_timeout`` are stored instead (counted from the log:
  under overload they lower the delivered rate rather than being lost).

The load generator is ``bench/xmpp_load.py``'s (raw XMPP clients in ``--procs`` processes, pairs
sending each other chat messages to full JIDs with ``--window`` in flight, latency from the send
time in the body). Server CPU is the whole process tree's (supervisor and workers), per message.
Server and clients share the machine's cores: compare the rows of one run.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import xmpp_load  # noqa: E402  (bench/ is not a package)
from xmpp_load import DOMAIN, PASSWORD, Workers, free_port, make_certificate, tail  # noqa: E402

CONFIGS = (("1 worker", 1, False), ("1 worker + cluster", 1, True), ("2 workers", 2, True))


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the supervisor's workers)."""
    total = xmpp_load.cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def config_text(tmp: Path, url: str, port: int, workers: int, cluster: bool, prefix: str, redis: str) -> str:
    """``xmpp_load``'s configuration on PostgreSQL, with ``workers`` (and a ``[cluster]`` table)."""
    text = xmpp_load.convergence_config(tmp, port, free_port(), free_port()).replace(
        'log_level = "warning"\n',
        f'log_level = "info"\nstats_interval = 0\ndatabase = "{url}"\nworkers = {workers}\n')
    if cluster:
        text += f'[cluster]\nredis = "{redis}"\nprefix = "{prefix}"\n'
    return text


def wait_serving(proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with status {proc.returncode}:\n{tail(log)}")
        if "convergence serving" in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"serve did not start within {timeout:.0f} s:\n{tail(log)}")


def measure(label: str, workers: int, cluster: bool, args) -> dict:
    from convergence.config import load
    from convergence.core import Core
    from convergence.testing import create_schema

    tmp = Path(tempfile.mkdtemp(prefix="cluster-load-"))
    url, drop = create_schema(args.database)
    proc = clients = None
    try:
        make_certificate(tmp)
        core = Core.create(load(None, {"server": {"domain": DOMAIN, "data_dir": str(tmp / "data"),
                                                  "database": url}}))
        core.db.upgrade()
        for i in range(args.clients):
            core.add_account(f"user{i}", PASSWORD)
        core.close()
        port = free_port()
        config = tmp / "convergence.toml"
        config.write_text(config_text(tmp, url, port, workers, cluster,
                                      f"bench:{uuid.uuid4().hex[:8]}:", args.redis))
        log = tmp / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "convergence"), "--config",
                                     str(config), "serve"], stdout=out, stderr=subprocess.STDOUT,
                                    cwd=tmp, env=xmpp_load.environment())
        wait_serving(proc, log)
        clients = Workers(args.procs, ("127.0.0.1", port))
        rate, ok, errors = clients.login(args.clients, args.concurrency, True)
        if ok < args.clients:
            raise RuntimeError(f"{args.clients - ok} logins failed: {errors[:3]}\n{tail(log)}")
        before, start = tree_cpu(proc.pid), time.monotonic() + 0.5
        results = clients.run("chat", lambda i: {"window": args.window, "start": start,
                                                  "stop": start + args.duration})
        cpu = tree_cpu(proc.pid) - before
        latencies = sorted(x for r in results for x in r)
        if not latencies:
            raise RuntimeError(f"no message was delivered:\n{tail(log)}")
        text = log.read_text(errors="replace")
        result = {"claimed_back": text.count("did not confirm a message"),
                  "messages": len(latencies) / args.duration, "cpu": 1e6 * cpu / len(latencies),
                  "p50": 1e3 * latencies[len(latencies) // 2],
                  "p99": 1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]}
        print(f"{label}: {result['messages']:,.0f} messages/s, {result['cpu']:.0f} µs server CPU "
              f"each, p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; hand-offs claimed back "
              f"and stored: {result['claimed_back']}", flush=True)
        return result
    finally:
        if clients:
            clients.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="postgresql+psycopg://127.0.0.1:5432/test",
                        help="PostgreSQL URL (a schema is created in it for each configuration)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--clients", type=int, default=100, help="clients, chatting in pairs")
    parser.add_argument("--duration", type=float, default=8, help="seconds of message exchange")
    parser.add_argument("--window", type=int, default=5, help="messages each client keeps in flight")
    parser.add_argument("--concurrency", type=int, default=25, help="logins in progress at once")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    args = parser.parse_args()
    args.clients += -args.clients % (2 * args.procs)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{os.cpu_count()} CPUs shared by the server and {args.procs} client processes; "
          f"{args.clients} clients in pairs, window {args.window}, {args.duration:g} s; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for label, workers, cluster in CONFIGS:
        try:
            results[label] = measure(label, workers, cluster, args)
        except RuntimeError as exc:
            print(f"{label}: FAILED: {exc}", file=sys.stderr, flush=True)
    print(f"\n{'configuration':<22}{'msgs/s':>10}{'µs CPU/msg':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for label, r in results.items():
        print(f"{label:<22}{r['messages']:>10,.0f}{r['cpu']:>12.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}")
    if "1 worker" in results and "2 workers" in results:
        print(f"2 workers / 1 worker: {results['2 workers']['messages'] / results['1 worker']['messages']:.2f}×")


if __name__ == "__main__":
    main()
