"""``convergence status``: asks the server of its configuration over the control path and prints
endpoints, logins and rates per protocol and the gauges; exits 1 with one line when no server runs
on that configuration (issue 17)."""
from pathlib import Path

import pytest

from actors import ACCOUNTS


@pytest.fixture
def status(run_convergence):
    """``status(config_path, *args)``: ``convergence -c config_path status ARGS``, run to its end."""
    return lambda config_path, *args: run_convergence("-c", config_path, "status", *args)


def row(output: str, protocol: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(protocol + " "))


def gauge(output: str, name: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.split()[:1] == [name])


def test_status_of_a_running_server_and_of_none(convergence_server, xmpp_client, status):
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
