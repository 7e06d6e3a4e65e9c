"""CPU time per routed message with the message archive (XEP-0313) off and on, in process.

The router's hot path with the XMPP plugin loaded (a local account with one live endpoint, XMPP
messages from another account: two archive rows each), timed with ``time.process_time`` (every
thread of the process, so the SQLite writer thread counts too; other processes' load does not)
and ``time.thread_time`` (the event loop's thread alone: what limits a server's rate). The
archive's queued messages are written before the clock stops. Prints the medians of 5 runs for
each setting, alternating off and on::

    .venv/bin/python bench/archive_cpu.py 5000
    .venv/bin/python bench/archive_cpu.py 5000 postgresql+psycopg://127.0.0.1:5432/test

With a PostgreSQL URL each run uses a schema of its own, dropped afterwards.
"""
import statistics
import sys
import tempfile
import time

import gevent

from convergence import Presence
from convergence.config import load
from convergence.core import Core
from convergence.plugins.xmpp.messages import XmppMessage
from convergence.testing import create_schema


class Sink:
    def __init__(self, address):
        self.address, self.protocol, self.presence = address, "xmpp", Presence()

    def deliver(self, message):
        pass


def run(archive: bool, n: int, database: str) -> tuple[float, float]:
    config = load(None, {"server": {"data_dir": tempfile.mkdtemp(), "database": database},
                         "xmpp": {"listen": "127.0.0.1:0", "archive": archive}})
    core = Core.create(config)
    core.db.upgrade()
    core.hook.on_startup(core=core)
    alice, bob = core.add_account("alice", "pw"), core.add_account("bob", "pw")
    core.presence.login(Sink(alice.with_resource("r")))
    sender, recipient = bob.with_resource("x"), alice.with_resource("r")
    archive_writer = core.pm.get_plugin("xmpp:server").service.archive
    times = []
    try:
        for _ in range(5):
            messages = [XmppMessage(sender, recipient, f"{time.time()} 42", type="chat") for _ in range(n)]
            start, loop_start = time.process_time(), time.thread_time()
            for i, message in enumerate(messages):
                core.send(message, "xmpp")
                if i % 200 == 199:
                    gevent.sleep(0)  # the server's loop runs other greenlets (the writer) too
            archive_writer.flush()
            times.append(((time.process_time() - start) / n * 1e6, (time.thread_time() - loop_start) / n * 1e6))
    finally:
        core.hook.on_shutdown(core=core)
        core.close()
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    url = sys.argv[2] if len(sys.argv) > 2 else ""
    for archive in (False, True, False, True):
        database, drop = create_schema(url) if url else ("", lambda: None)
        try:
            process, loop = run(archive, n, database)
            print(f"archive {'on ' if archive else 'off'}: {process:.1f} µs CPU per routed message, "
                  f"{loop:.1f} µs of it in the event loop's thread", flush=True)
        finally:
            drop()


if __name__ == "__main__":
    main()
