"""Node ids are unique (docs/cluster.md "Node ids"): a process claims its ``[cluster] node_id``
in Redis at start (its heartbeat key, set only if free); a second process configured with the id
of a live node refuses to start (exit status 2, one line naming the id and the holder); a node
restarted after a crash takes its id back at once (the holder's pid runs no more here); a node
whose id another process took while it could not renew it stops with exit status 2, leaving
the other's heartbeat alone."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from convergence.testing import free_port, free_udp_tcp_port, toml_value

ACCOUNTS = {"alice": "a"}


def serve_refused(tmp_path, server, node_id: str) -> subprocess.CompletedProcess:
    """``convergence serve`` with ``server``'s settings, its own ports and data_dir, and
    ``node_id``: run to its end."""
    config = {**server.config, "server": {**server.config["server"], "data_dir": str(tmp_path / "second")},
              "cluster": {**server.config["cluster"], "node_id": node_id},
              "xmpp": {**server.config["xmpp"], "listen": f"127.0.0.1:{free_port()}"},
              "http": {**server.config["http"], "listen": f"127.0.0.1:{free_port()}"},
              "sip": {**server.config["sip"], "listen": f"127.0.0.1:{free_udp_tcp_port()}"}}
    path = tmp_path / "second.toml"
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
                            for name, table in config.items()))
    return subprocess.run([str(Path(sys.executable).parent / "convergence"), "--config", str(path), "serve"],
                          capture_output=True, text=True, timeout=60)


def heartbeat(redis_prefix, node_id: str) -> dict:
    client, prefix = redis_prefix
    return json.loads(client.get(f"{prefix}node:{node_id}"))


def test_a_second_process_with_a_live_node_s_id_is_refused(node, redis_prefix, tmp_path):
    a = node("node-a", ACCOUNTS)
    done = serve_refused(tmp_path, a, "node-a")
    assert done.returncode == 2, done.stdout + done.stderr
    reason = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(reason) == 1 and "node id 'node-a' is held by a live process (pid %d on " % a.process.proc.pid \
        in reason[0], done.stderr
    assert "listening" not in done.stdout + done.stderr  # refused before any listener
    assert heartbeat(redis_prefix, "node-a")["pid"] == a.process.proc.pid  # node A's, untouched
    a.process.wait_for("cluster node node-a joined")
    assert a.process.proc.poll() is None


def test_a_node_restarted_after_a_crash_takes_its_id_back_at_once(convergence_server, cluster_table,
                                                                  redis_prefix):
    """node_timeout 30 s: the crashed node's claim is still there; the new process sees that its
    pid runs no more here and takes it over without waiting for it to expire."""
    table = {**cluster_table, "node_id": "node-a", "node_timeout": 30.0}
    a = convergence_server(ACCOUNTS, cluster=table)
    old = a.process.proc.pid
    a.process.proc.send_signal(signal.SIGKILL)
    a.process.proc.wait()
    started = time.monotonic()
    again = convergence_server({}, cluster=table)
    assert time.monotonic() - started < 15  # not the 30 s of the old claim
    again.process.wait_for(f"node id node-a taken over from pid {old} ")
    assert not any("waiting up to" in line for line in again.process.output)
    assert heartbeat(redis_prefix, "node-a")["pid"] == again.process.proc.pid


def test_a_worker_the_supervisor_restarts_takes_its_id_back_at_once(convergence_server, cluster_table):
    """The same under the supervisor (node_timeout 30 s): a worker killed with SIGKILL is
    restarted with its node id (``…/w1``) and serves again without waiting for the old claim."""
    server = convergence_server(ACCOUNTS, server={"workers": 2}, cluster={**cluster_table, "node_timeout": 30.0})
    line = server.process.wait_for("worker serving 1 ")
    pid = int(re.search(r"\(pid (\d+)\)", line).group(1))
    mark = len(server.process.output)
    os.kill(pid, signal.SIGKILL)
    server.process.wait_for(f"taken over from pid {pid} ", timeout=15, start=mark)
    server.process.wait_for("worker serving 1 ", timeout=15, start=mark)
    assert not any("waiting up to" in line for line in server.process.output)


def test_a_node_whose_id_was_taken_stops(node, redis_prefix):
    """Another process took node A's id while A could not renew it (written here by hand): at its
    next heartbeat A stops with exit status 2 and does not delete the other's heartbeat."""
    client, prefix = redis_prefix
    a = node("node-a", ACCOUNTS)
    other = json.dumps({"node": "node-a", "pid": 1, "host": "elsewhere", "place": "elsewhere",
                        "instance": "other", "started": time.time(), "beat": time.time()})
    client.set(f"{prefix}node:node-a", other, px=60000)
    assert a.process.proc.wait(timeout=10) == 2, "".join(a.process.output)
    a.process.wait_for("Error: cluster: node id 'node-a' was taken by another process (pid 1 on elsewhere")
    assert client.get(f"{prefix}node:node-a") == other
