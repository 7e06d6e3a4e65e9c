"""What a cluster node's directory and heartbeat cost with many endpoints (issue 14).

Run (Redis up; no server, no database needed):

    .venv/bin/python bench/cluster_directory.py                # 10,000 endpoints
    .venv/bin/python bench/cluster_directory.py --endpoints 50000

Two cluster members (``convergence.cluster.Cluster``) run in this process on one Redis, under a key
prefix of their own (removed afterwards), each on a core of its own with an in-memory database.
Node A gets ``--endpoints`` endpoints (logins, as a protocol plugin reports them); the script times:

- **login**: one endpoint coming online on A (the hub's ``login``: directory ``HSET`` and ``PUBLISH``
  in one pipeline), per endpoint;
- **seen by B**: until node B's presence hub holds all of them (from the published events);
- **heartbeat**: one heartbeat of A (the script renewing its id's claim, and ``PEXPIRE`` of its
  hash: independent of the number of endpoints) — and what Redis holds for A (``MEMORY USAGE`` of the hash);
- **announce**: A rewriting its whole directory (what it does at start and after a Redis outage);
- **load**: a third node joining and loading A's directory into its hub (``HGETALL`` and one
  remote endpoint each);
- **node loss**: B dropping A's endpoints once A's heartbeat expired (watchers' ``unavailable``
  fan-out included, with no plugin listening);
- **same node vs across**: ``--messages`` messages routed on A to an endpoint on A, then to one on
  B (a hand-off: publish, B's claim and delivery, its acknowledgement), one at a time (latency)
  and from 50 greenlets at once (rate); CPU is this process's, which runs both nodes (Redis's own
  CPU is not counted).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import gevent  # noqa: E402

from convergence.addresses import Address  # noqa: E402
from convergence.cluster import Cluster  # noqa: E402
from convergence.config import load  # noqa: E402
from convergence.message import Message  # noqa: E402
from convergence.core import Core  # noqa: E402
from convergence.store import Database  # noqa: E402
from convergence.testing import RecordingEndpoint  # noqa: E402


def member(name: str, table: dict) -> Cluster:
    core = Core.create(load(None, {"server": {"domain": "example.org"}, "cluster": table}),
                       db=Database("sqlite://"), load_entry_points=False)
    node = Cluster(core, name)
    node.start()
    return node


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def wait_until(test, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        gevent.sleep(0.01)


def delivery(a: Cluster, b: Cluster, count: int) -> None:
    here = RecordingEndpoint(Address("near", "example.org", "r"))
    there = RecordingEndpoint(Address("far", "example.org", "r"))
    a.core.presence.login(here)
    b.core.presence.login(there)
    wait_until(lambda: a.core.presence.endpoint(there.address) is not None)
    sender = Address("someone", "example.org", "x")
    for label, target in (("same node", here), ("across nodes", there)):
        def one(i, to=target.address):
            assert a.core.send(Message(sender, to.bare, f"m{i}", type="chat")) == "delivered"
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            one(i)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        pool_wall = time.perf_counter()
        gevent.joinall([gevent.spawn(lambda k=k: [one(i) for i in range(k, count, 50)]) for k in range(50)])
        pool_wall = time.perf_counter() - pool_wall
        wait_until(lambda t=target: len(t.received) == 2 * count)
        print(f"{label}: {1e6 * wall / count:,.0f} µs per message one at a time, "
              f"{1e6 * cpu / count:,.0f} µs CPU each; {count / pool_wall:,.0f} msg/s from 50 greenlets")
    a.core.presence.logout(here)
    b.core.presence.logout(there)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=3_000)
    args = parser.parse_args()
    n = args.endpoints
    prefix = f"bench-dir:{uuid.uuid4().hex[:8]}:"
    table = {"redis": args.redis, "prefix": prefix, "node_timeout": 3600.0}
    a, b = member("node-a", table), member("node-b", table)
    try:
        delivery(a, b, args.messages)
        endpoints = [RecordingEndpoint(Address(f"user{i}", "example.org", "r")) for i in range(n)]
        login = timed(lambda: [a.core.presence.login(e) for e in endpoints])
        print(f"login: {1e6 * login / n:.0f} µs per endpoint ({n / login:,.0f}/s) with the directory write")
        seen = timed(lambda: wait_until(lambda: len(b.remote.get("node-a", ())) == n))
        print(f"seen by B: all {n:,} within {seen:.2f} s after the last login")
        beats = 20
        def heartbeat():  # as Cluster._heartbeat: the id's claim renewed (HOLD) and the hash's expiry
            pipe = a.redis.pipeline(transaction=False)
            a._hold(keys=[a.node_key], args=[a.instance, a._beat(), 3_600_000, ""], client=pipe)
            pipe.pexpire(a.dir_key, 3_600_000).execute()

        beat = timed(lambda: [heartbeat() for _ in range(beats)])
        size = a.redis.memory_usage(a.dir_key) or 0
        print(f"heartbeat: {1e3 * beat / beats:.2f} ms (constant in the number of endpoints); "
              f"A's directory hash in Redis: {size / 1024:,.0f} KiB ({size / n:.0f} bytes per endpoint)")
        announce = timed(a._announce)
        print(f"announce (rewrite all {n:,}): {1e3 * announce:.0f} ms")
        c = member("node-c", table)
        load_time = timed(lambda: c._load("node-a"))
        print(f"load (a joining node reads all {n:,}): {1e3 * load_time:.0f} ms")
        c.stop()
        lost = timed(lambda: b._drop_node("node-a"))
        print(f"node loss (B drops all {n:,}): {1e3 * lost:.0f} ms")
    finally:
        for node in (a, b):
            node.stop()
        keys = list(a.redis.scan_iter(f"{prefix}*"))
        if keys:
            a.redis.delete(*keys)


if __name__ == "__main__":
    main()
