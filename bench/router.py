"""Core routing throughput: messages/s through resolve_recipient → endpoint, and → offline store.

Run: python bench/router.py [--messages N] [--database URL]
The figures are the ceiling every protocol plugin's relay rate sits under (no sockets involved).
"""
import argparse
import tempfile
import time

from convergence import Message, Presence
from convergence.config import load
from convergence.core import Core
from convergence.store import Database, accounts


class Sink:
    def __init__(self, address):
        self.address, self.protocol, self.presence, self.count = address, "bench", Presence(), 0

    def deliver(self, message):
        self.count += 1


def rate(label, n, fn):
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    elapsed = time.perf_counter() - started
    print(f"{label:<34} {n / elapsed:>10,.0f} msg/s  ({elapsed * 1e6 / n:,.1f} µs each)")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--database", default=None, help="default: SQLite file in a temp dir")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    config = load(None, {"server": {"data_dir": tmp, "database": args.database or "",
                                    "max_offline_messages": args.messages + 1}})
    core = Core.create(config, Database(config.database_url))
    core.db.upgrade()
    core.hook.on_startup(core=core)
    for name in ("alice", "bob"):
        if not accounts.exists(core.db, name):
            core.add_account(name, "pw")
    alice, bob = core.address("alice"), core.address("bob")
    sink = Sink(bob.with_resource("r"))
    print(f"database: {core.db.url.render_as_string()}")
    core.presence.login(sink)
    rate("echo (route + reply)", args.messages,
         lambda i: core.send(Message(sink.address, core.address("echo"), f"m{i}")))
    rate("account, live endpoint", args.messages,
         lambda i: core.send(Message(alice, bob, f"m{i}")))
    core.presence.logout(sink)
    rate("account, offline store", args.messages // 4,
         lambda i: core.send(Message(alice, bob, f"m{i}")))
    core.presence.login(sink)
    started = time.perf_counter()
    delivered = core.router.deliver_stored(bob)
    print(f"{'offline flush':<34} {delivered / (time.perf_counter() - started):>10,.0f} msg/s")
    core.close()


if __name__ == "__main__":
    main()
