"""``convergence status``: asks the server of its configuration over the control path and prints
endpoints, logins and rates per protocol and the gauges; exits 1 with one line when no server runs
on that configuration (issue 17)."""
import os
import subprocess
import sys
from pathlib import Path

from actors import ACCOUNTS


def status(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENCE_")}
    return subprocess.run([str(Path(sys.executable).parent / "convergence"), "-c", str(config_path),
                           "status", *args], capture_output=True, text=True, timeout=60, env=env)


def row(output: str, protocol: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(protocol + " "))


def gauge(output: str, name: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.split()[:1] == [name])


def test_status_of_a_running_server_and_of_none(convergence_server, xmpp_client):
    server = convergence_server(ACCOUNTS)
    config = server.process.config_path
    alice = xmpp_client(server, "convergence")
    alice.send_message(server.jid("echo"), "hi")  # to echo, and its answer back: 2 delivered
    alice.next("message")
    done = status(config, "--interval", "0.2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"convergence serving {server.domain}: pid {server.process.proc.pid}, up ")
    assert row(done.stdout, "xmpp")[:4] == ["xmpp", "1", "1", "0"]  # endpoints, logins, failed
    assert row(done.stdout, "http")[:4] == ["http", "0", "0", "0"]
    assert "messages routed since start: 2 delivered" in done.stdout
    assert gauge(done.stdout, "convergence_xmpp_c2s_sessions") == "1"
    assert gauge(done.stdout, "convergence_offline_messages") == "0"

    assert server.process.stop() == 0
    gone = status(config)
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr.splitlines() == [f"Error: no convergence serve is running on this "
                                        f"configuration (nothing listens on "
                                        f"{Path(server.config['server']['data_dir']) / 'control.sock'})"]
