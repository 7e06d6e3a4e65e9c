"""CPU time per routed message, in process: the router's hot path (a local account with one live
endpoint) timed with ``time.process_time``, so other processes' load on the machine does not count
(unlike the rates of xmpp_load.py and convergence_load.py). Prints the median of 9 runs.

Run it with the Python of each build to compare (docs/operations.md, "What counting costs"):

    /path/to/venv-a/bin/python bench/route_cpu.py 20000
    /path/to/venv-b/bin/python bench/route_cpu.py 20000
"""
import inspect
import statistics
import sys
import tempfile
import time

from convergence import Message, Presence
from convergence.config import load
from convergence.core import Core
from convergence.store import Database


class Sink:
    def __init__(self, address):
        self.address, self.protocol, self.presence, self.count = address, "xmpp", Presence(), 0

    def deliver(self, message):
        self.count += 1


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50000
    config = load(None, {"server": {"data_dir": tempfile.mkdtemp()}})
    core = Core.create(config, Database(config.database_url), load_entry_points=False)
    core.db.upgrade()
    core.hook.on_startup(core=core)
    alice, bob = core.add_account("alice", "pw"), core.add_account("bob", "pw")
    core.presence.login(Sink(alice.with_resource("r")))
    sender = bob.with_resource("x")
    messages = [Message(sender, alice, "hello") for _ in range(n)]
    source = ("xmpp",) if "source" in inspect.signature(core.send).parameters else ()  # older builds
    runs = []
    for _ in range(9):
        started = time.process_time()
        for message in messages:
            core.send(message, *source)
        runs.append((time.process_time() - started) / n * 1e6)
    print(f"{statistics.median(runs):.3f} µs/message (median of 9 x {n}; "
          f"min {min(runs):.3f}, max {max(runs):.3f})")


if __name__ == "__main__":
    main()
