"""The ``convergence`` command as a user runs it: a real process, real exit codes, real signals.

The commands are forked from the test kit's fork server, which runs the script's command line
without its imports (convergence.forkserver); one test runs the installed script itself."""
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from convergence.testing import cli_env, free_port, free_udp_tcp_port


@pytest.fixture
def run(run_convergence):
    """``run(cwd, *args, config=None, input=None, timeout=60)``: ``convergence ARGS`` run in
    ``cwd`` to its end (a ``subprocess.CompletedProcess``); ``config`` is written to
    ``cwd/c.toml`` and named by ``CONVERGENCE_CONFIG``."""
    def run(cwd: Path, *args, config=None, input=None, timeout=60) -> subprocess.CompletedProcess:
        env = {}
        if config is not None:
            (cwd / "c.toml").write_text(config)
            env["CONVERGENCE_CONFIG"] = str(cwd / "c.toml")
        return run_convergence(*args, cwd=cwd, env=env, input=input, timeout=timeout)
    return run


def test_the_installed_script_is_the_command_line_the_tests_fork(tmp_path, run):
    """The console script (entry point ``convergence.main:main``) in a fresh interpreter answers
    exactly as the forked command line the other tests run: a bad configuration, exit 2, one line."""
    config = "[server]\nbogus = 1\n"
    forked = run(tmp_path, "user", "list", config=config)
    script = subprocess.run([str(Path(sys.executable).parent / "convergence"), "user", "list"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env=cli_env(CONVERGENCE_CONFIG=str(tmp_path / "c.toml")))
    assert (script.returncode, script.stdout, script.stderr) == (forked.returncode, forked.stdout, forked.stderr)
    assert script.returncode == 2 and "[server] bogus: unknown key" in script.stderr


def test_a_forked_command_waits_on_its_stdin_pipe_until_killed(tmp_path, fork_server):
    """A command started with a stdin pipe (``launch``, as ``Popen(stdin=PIPE)``) prompts for its
    password and waits for it there while the pipe stays open; killed, its status is -9."""
    child = fork_server.launch(["user", "add", "bob"], tmp_path, cli_env(), stdin=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    prompt = ""
    while not prompt.endswith("Password: "):  # getpass's prompt, on stderr without a newline
        char = child.stderr.read(1)
        assert char, prompt  # (the end: it did not wait)
        prompt += char
    assert child.poll() is None
    child.kill()
    out, err = child.communicate(timeout=10)
    assert child.returncode == -signal.SIGKILL and out == "" and err == ""


def test_a_command_past_its_timeout_is_killed(tmp_path, run):
    """``run``'s timeout is ``subprocess.run``'s: the command (a server, which never ends by
    itself) is killed and ``TimeoutExpired`` carries what it wrote."""
    config = "".join(f'[{table}]\nlisten = "{keys["listen"]}"\n'
                     for table, keys in http_config(free_port()).items())
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run(tmp_path, "serve", config=config, timeout=0.5)
    assert isinstance(timed_out.value.stderr, str)  # read to its end: the server is gone


@pytest.mark.parametrize("args", [[], ["serve"], ["user"], ["user", "add"], ["user", "del"],
                                  ["user", "list"], ["user", "passwd"], ["db"], ["db", "upgrade"],
                                  ["db", "current"], ["plugins"]])
def test_help_everywhere(tmp_path, args, run):
    result = run(tmp_path, *args, "--help")
    assert result.returncode == 0 and "Usage: convergence" in result.stdout


def test_no_file_means_defaults_under_convergence_data(tmp_path, run):
    result = run(tmp_path, "user", "add", "bob", "--password", "pw")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "convergence-data" / "convergence.db").exists()
    assert run(tmp_path, "user", "list").stdout == "bob@localhost\n"


def test_user_commands(tmp_path, run):
    config = f'[server]\ndomain = "example.org"\ndata_dir = "{tmp_path}/data"\n'
    assert run(tmp_path, "user", "add", "Bob", config=config, input="pw\npw\n").returncode == 0
    assert run(tmp_path, "user", "passwd", "bob", "-p", "new", config=config).returncode == 0
    assert run(tmp_path, "user", "list", config=config).stdout == "bob@example.org\n"
    assert run(tmp_path, "user", "del", "bob", config=config).returncode == 0
    assert run(tmp_path, "user", "list", config=config).stdout == ""


@pytest.mark.parametrize("args, message", [
    (["user", "add", "bob", "-p", "other"], "account 'bob' already exists"),
    (["user", "add", "bo b", "-p", "x"], "contains a space"),
    (["user", "add", "a@b", "-p", "x"], "forbidden character '@'"),
    (["user", "add", "carol", "-p", ""], "password is empty"),
    (["user", "del", "carol"], "no account 'carol'"),
    (["user", "passwd", "carol", "-p", "x"], "no account 'carol'"),
])
def test_refused_user_requests_exit_1_and_change_nothing(tmp_path, args, message, run):
    run(tmp_path, "user", "add", "bob", "-p", "pw")
    result = run(tmp_path, *args)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert run(tmp_path, "user", "list").stdout == "bob@localhost\n"


@pytest.mark.parametrize("config, message", [
    ("[server\n", "not valid TOML"),
    ('[server]\nbogus = 1\n', "[server] bogus: unknown key"),
    ('[xmpp]\nlisten = "nohost"\n', '[xmpp] listen: expected "host:port"'),
    ('[server]\ndisabled_plugins = ["nosuch"]\n', "unknown plugin 'nosuch'"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, config, message, run):
    result = run(tmp_path, "user", "list", config=config)
    assert result.returncode == 2
    assert message in result.stderr and str(tmp_path / "c.toml") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file_exits_2(tmp_path, run):
    result = run(tmp_path, "--config", str(tmp_path / "nope.toml"), "plugins")
    assert result.returncode == 2 and "nope.toml: cannot read" in result.stderr


@pytest.mark.parametrize("url, message", [
    (f"postgresql+psycopg://127.0.0.1:1/test", "cannot connect to database"),
    ("nosuchdb://x/y", "cannot use database"),
    ("not a url", "is not valid"),
])
def test_unusable_database_exits_2_quickly(tmp_path, url, message, run):
    started = time.monotonic()
    result = run(tmp_path, "user", "list", config=f'[server]\ndatabase = "{url}"\n')
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_plugins_lists_the_bundled_protocols(tmp_path, run):
    result = run(tmp_path, "plugins")
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert {"sip", "xmpp", "http", "echo"} <= names
    assert "resolve_recipient" in result.stdout


def test_db_upgrade_and_current(tmp_path, run):
    before = run(tmp_path, "db", "current").stdout
    assert "(empty)" in before and "needs `convergence db upgrade`" in before
    assert run(tmp_path, "db", "upgrade").returncode == 0
    assert "up to date" in run(tmp_path, "db", "current").stdout


def http_config(port):
    """HTTP on ``port``; the other listeners on free loopback ports, not their well-known ones."""
    return {"http": {"listen": f"127.0.0.1:{port}"},
            "xmpp": {"listen": f"127.0.0.1:{free_port()}"},
            "sip": {"listen": f"127.0.0.1:{free_udp_tcp_port()}"}}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_answers_then_stops_cleanly_on_signal(serve, sig):
    port = free_port()
    server = serve(http_config(port))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as response:
        assert json.load(response)["domain"] == "localhost"
    started = time.monotonic()
    server.proc.send_signal(sig)
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_serve_demo_creates_the_sample_accounts(tmp_path, serve, run):
    server = serve(http_config(free_port()), "--demo")
    assert server.stop() == 0
    text = "".join(server.output)
    assert "demo account convergence@localhost created, password: 1" in text
    assert "demo account sipuserf@localhost created, password: " in text
    assert run(tmp_path, "--config", str(server.config_path), "user", "list").stdout == \
        "convergence@localhost\nsipuserf@localhost\n"
    again = serve(http_config(free_port()), "--demo")  # a second run keeps the accounts as they are
    assert "demo account sipuserf@localhost exists" in "".join(again.output)


def test_serve_exits_2_when_the_port_is_taken(tmp_path, run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = http_config(port)
        result = run(tmp_path, "serve", config="".join(f'[{table}]\nlisten = "{keys["listen"]}"\n'
                                                       for table, keys in config.items()))
    assert result.returncode == 2 and f"127.0.0.1:{port}" in result.stderr
    assert "shutting down" not in result.stderr  # it never started: the error line says it all


def test_no_account_names_the_database_a_relative_data_dir_meant(tmp_path, run):
    """Issue 10 §5: run from another folder, the default ./convergence-data is another database."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    assert run(here, "user", "add", "bob", "-p", "pw").returncode == 0
    for args in (["del", "bob"], ["passwd", "bob", "-p", "x"]):
        result = run(elsewhere, "user", *args)
        assert result.returncode == 1
        assert f"no account 'bob' in sqlite:///{elsewhere}/convergence-data/convergence.db" in result.stderr
