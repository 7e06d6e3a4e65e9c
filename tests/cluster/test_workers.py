"""``convergence serve`` with 2 workers on PostgreSQL and Redis: sessions on different workers
chat and see each other's presence, the HTTP API reaches either, a worker killed with SIGKILL is
restarted with a log line while its sessions' watchers see them go, SIGTERM stops all with exit
status 0 (issue 14, docs/cluster.md)."""
from __future__ import annotations

import os
import re
import signal
import socket
import time

from convergence.testing import cli_env, free_port, toml_value

from .helpers import api_send, available_from, chat_body, on_another_worker, worker_of

ACCOUNTS = {"alice": "a", "bob": "b"}


def test_two_workers_share_the_listeners(convergence_server, cluster_table, xmpp_client):
    server = convergence_server(ACCOUNTS, server={"workers": 2}, cluster=cluster_table)
    assert "with 2 workers" in server.process.wait_for("convergence serving")
    alice = xmpp_client(server, "alice", resource="a")
    bob = on_another_worker(lambda n: xmpp_client(server, "bob", resource=f"b{n}"), server,
                            worker_of(server, alice.jid))
    # presence across workers, both ways
    bob.next("presence", timeout=10, match=available_from(alice.jid))
    alice.next("presence", timeout=10, match=available_from(bob.jid))
    alice.send_message(bob.jid, "to the other worker")
    bob.next("message", timeout=10, match=chat_body("to the other worker"))
    bob.send_message("alice@" + server.domain, "back")
    alice.next("message", timeout=10, match=chat_body("back"))
    for n in range(4):  # whichever worker takes the HTTP request
        assert api_send(server, "alice", "a", bob.jid, f"api {n}")["outcome"] == "delivered"
        bob.next("message", timeout=10, match=chat_body(f"api {n}"))

    # SIGKILL bob's worker: restarted with a log line; alice sees bob go
    index = bob_worker = worker_of(server, bob.jid)
    pid = int(re.search(r"worker serving %s \(pid (\d+)\)" % index[1:],
                        server.process.wait_for(f"worker serving {index[1:]} ")).group(1))
    mark = len(server.process.output)
    os.kill(pid, signal.SIGKILL)
    alice.next("presence", timeout=10, match=available_from(bob.jid, "unavailable"))
    server.process.wait_for(f"worker {bob_worker[1:]} (pid {pid}) was killed by SIGKILL; restarting", start=mark)
    server.process.wait_for(f"worker serving {bob_worker[1:]} ", start=mark)
    assert server.process.stop() == 0, "".join(server.process.output[-20:])


def test_a_worker_that_cannot_listen_stops_the_supervisor(tmp_path, cluster_table, database_url,
                                                          run_convergence):
    """A port taken by another program: worker 0 exits with status 2 and its reason, the supervisor
    stops and exits with status 2 instead of restarting it forever."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", free_port()))
    taken.listen()
    config = {"server": {"data_dir": str(tmp_path / "data"), "database": database_url, "workers": 2},
              "cluster": cluster_table, "xmpp": {"listen": "127.0.0.1:%d" % taken.getsockname()[1], "s2s_listen": ""},
              "http": {"listen": f"127.0.0.1:{free_port()}"}, "sip": {"listen": f"127.0.0.1:{free_port()}"}}
    path = tmp_path / "c.toml"
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
                            for name, table in config.items()))
    try:
        done = run_convergence("--config", path, "serve")
    finally:
        taken.close()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot listen" in done.stdout + done.stderr
    assert "restarting" not in done.stdout + done.stderr


def test_workers_start_one_after_the_other_whatever_the_log_level(tmp_path, cluster_table, database_url,
                                                                   fork_server, run_convergence):
    """A worker tells the supervisor it serves on its output, not in a log line, so with
    ``log_level = "warning"`` worker 1 still starts as soon as worker 0 serves — not after the
    supervisor's START_TIMEOUT (60 s), as when the readiness line was an INFO log line."""
    config = {"server": {"data_dir": str(tmp_path / "data"), "database": database_url, "workers": 2,
                         "log_level": "warning"},
              "cluster": cluster_table, "xmpp": {"listen": f"127.0.0.1:{free_port()}", "s2s_listen": ""},
              "http": {"listen": f"127.0.0.1:{free_port()}"}, "sip": {"listen": f"127.0.0.1:{free_port()}"}}
    path = tmp_path / "c.toml"
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
                            for name, table in config.items()))
    supervisor = fork_server.launch(["--config", str(path), "serve"], tmp_path, cli_env())
    try:
        deadline, status = time.monotonic() + 30, None
        while time.monotonic() < deadline:  # each try is a round trip to Redis: the nodes' heartbeats
            status = run_convergence("--config", path, "cluster", "status")
            if "/w0" in status.stdout and "/w1" in status.stdout:
                break
        assert status is not None and "/w1" in status.stdout, status and status.stdout + status.stderr
    finally:
        supervisor.terminate()
        assert supervisor.wait(30) == 0

