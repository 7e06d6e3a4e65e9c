"""The plugin author's test kit: a pytest plugin (entry point ``pytest11``), active wherever
convergence is installed.

Fixtures:

- ``make_core(overrides=None, plugins=None, load_entry_points=True)`` — a started
  :class:`~convergence.core.Core` on a fresh, migrated database (``OFF_IN_TESTS`` as for
  ``serve``); ``plugins`` (name → module or object) are registered before start-up. Stopped and dropped after the test.
- ``core`` — ``make_core()`` with every installed plugin.
- ``register_plugin(plugin, name=None)`` — register a plugin on ``core`` for one test.

- ``serve(config=None, *args)`` — a real ``convergence serve`` process (``config`` is a TOML-shaped
  dict; ``data_dir`` defaults to the test's ``tmp_path``, ``database`` to ``database_url``;
  listeners that are on by default on a well-known port and that tests seldom want, ``OFF_IN_TESTS``
  (XMPP federation on 5269), are off unless the config sets them),
  returned once every listener is up; terminated after the test. For scenario tests with real
  clients. The process is forked from the fork server (:mod:`convergence.forkserver`), which has
  imported everything already: the same command line, without paying for the imports each time.
- ``fork_server`` — the session's :class:`~convergence.forkserver.ForkServer` (``serve`` forks
  from it; ``ServerProcess(..., launcher=fork_server)`` for a process started another way).
  ``fork_server.launch(argv, cwd, cli_env(), stdin=None, stderr=subprocess.STDOUT)`` starts a
  command line like ``subprocess.Popen`` (``subprocess.PIPE`` for a stdin or a stderr of its own).
- ``run_convergence(*args, cwd=tmp_path, env=None, input=None, timeout=60)`` — ``convergence ARGS``
  run to its end, forked from ``fork_server``, as ``subprocess.run(capture_output=True, text=True,
  input=input, timeout=timeout)`` would run the script: a ``subprocess.CompletedProcess`` with
  ``returncode``, ``stdout`` and ``stderr``. The environment is :func:`cli_env` plus ``env``.
- ``database_url`` — the ``[server] database`` such a process uses: ``""`` (SQLite in its
  ``data_dir``) or the test's own PostgreSQL schema (below). Put it in a config you open yourself
  (to create accounts before the server starts) so both see the same database.

Helpers: :class:`RecordingEndpoint`, an endpoint that keeps what it is given; :func:`free_port`,
:func:`free_udp_tcp_port`; :func:`cli_env`, the environment of a ``convergence`` process.

The database is SQLite (in memory for ``make_core``), or PostgreSQL with ``--convergence-database URL``
(or ``CONVERGENCE_TEST_DATABASE``): each test then gets a schema of its own, dropped afterwards.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import MappingProxyType

import pytest

from . import forkserver
from .addresses import Address
from .config import load
from .core import Core
from .message import RoutingError
from .presence import Presence
from .store import Database


class RecordingEndpoint:
    """An endpoint for tests: keeps delivered messages in ``received``; ``refuse`` makes it fail."""

    def __init__(self, address: Address, protocol: str = "test", presence: Presence | None = None):
        self.address = address
        self.protocol = protocol
        self.presence = presence or Presence()
        self.received = []
        self.refuse = False

    def deliver(self, message) -> None:
        if self.refuse:
            raise RoutingError("recipient-unavailable", "refused by the test")
        self.received.append(message)

    def __repr__(self):
        return f"RecordingEndpoint({self.address})"


def pytest_addoption(parser):
    parser.addoption("--convergence-database", default=os.environ.get("CONVERGENCE_TEST_DATABASE"),
                     help="SQLAlchemy URL of a PostgreSQL database for convergence's fixtures "
                          "(default: in-memory SQLite)")


def create_schema(url: str):
    """A new PostgreSQL schema in the database at ``url``: its URL (search_path set) and a dropper."""
    schema = "cv_" + uuid.uuid4().hex[:12]
    admin = Database(url)
    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")

    def drop():
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", drop


def open_test_database(url: str | None):
    """A fresh Database and a function that drops it: in-memory SQLite or a new PostgreSQL schema."""
    if not url:
        db = Database("sqlite://")
        return db, db.close
    schema_url, drop_schema = create_schema(url)
    db = Database(schema_url)

    def drop():
        db.close()
        drop_schema()
    return db, drop


@pytest.fixture
def database_url(request):
    """``[server] database`` for a server process: "" (SQLite in its data_dir), or with
    ``--convergence-database`` a PostgreSQL schema of the test's own, dropped afterwards."""
    url = request.config.getoption("convergence_database")
    if not url:
        yield ""
        return
    schema_url, drop = create_schema(url)
    yield schema_url
    drop()


#: Settings a test server gets unless its config says otherwise: what is on by default on a
#: well-known port (a test must never bind it) and changes routing (other domains would be routed
#: over federation).
OFF_IN_TESTS = MappingProxyType({"xmpp": MappingProxyType({"s2s_listen": ""})})


def with_test_defaults(config: dict, loaded=lambda plugin: True) -> dict:
    """``config`` (TOML-shaped) with ``OFF_IN_TESTS`` under what it sets itself, for the plugins
    that will be ``loaded`` (a section of a plugin that is not is an error)."""
    return {**config, **{name: {**defaults, **config.get(name, {})}
                         for name, defaults in OFF_IN_TESTS.items() if loaded(name)}}


@pytest.fixture
def make_core(request):
    started = []

    def make(overrides: dict | None = None, plugins: dict | None = None,
             load_entry_points: bool = True) -> Core:
        db, drop = open_test_database(request.config.getoption("convergence_database"))
        overrides = dict(overrides or {})
        server = {"data_dir": str(request.getfixturevalue("tmp_path")), **overrides.pop("server", {})}
        config = load(None, with_test_defaults(
            {"server": server, **overrides},
            lambda name: (load_entry_points or name in (plugins or {})) and name not in server.get("disabled_plugins", ())))
        core = Core.create(config, db=db, load_entry_points=load_entry_points, plugins=plugins)
        core.db.upgrade()
        core.hook.on_startup(core=core)
        started.append((core, drop))
        return core

    yield make
    for core, drop in reversed(started):
        core.hook.on_shutdown(core=core)
        drop()


@pytest.fixture
def core(make_core) -> Core:
    return make_core()


@pytest.fixture
def register_plugin(core):
    registered = []

    def register(plugin, name: str | None = None):
        name = name or getattr(plugin, "__name__", None) or f"test-plugin-{len(registered)}"
        core.pm.register_plugin(plugin, name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        core.pm.unregister(plugin)


#: Where ``free_port`` looks: below the kernel's ephemeral range (32768-60999 on Linux), so that no
#: outgoing connection's local port, nor another program asking for port 0, can take a port between
#: a test picking it and its server binding it.
PORT_RANGE = (20000, 32000)


def _claim(port: int) -> bool:
    """Claim ``port`` for this process with a lock file, so that test runs side by side (``.ci/run``
    runs two) never hand out the same one; a claim whose process is gone is taken over."""
    claims = Path(tempfile.gettempdir()) / f"convergence-test-ports-{os.getuid()}"  # per user
    claims.mkdir(exist_ok=True)
    path = claims / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
                os.kill(owner, 0)
                return False  # a live process holds it (or is writing its pid right now)
            except ProcessLookupError:
                path.unlink(missing_ok=True)  # a finished run's claim
                continue
            except (ValueError, OSError):
                return False
        with os.fdopen(fd, "w") as claim:
            claim.write(str(os.getpid()))
        return True
    return False


def _bindable(port: int, *kinds: int) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _port(*kinds: int) -> int:
    for _ in range(1000):
        port = random.randrange(*PORT_RANGE)
        if _bindable(port, *kinds) and _claim(port):
            return port
    raise RuntimeError("no free port")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1, free now and claimed for this process for the rest of its run: for TCP,
    or UDP with ``socket.SOCK_DGRAM``. Never one the kernel hands out as an ephemeral port, nor one
    another test process (the other half of ``.ci/run``) picked: so the server that binds it a
    moment later finds it free."""
    return _port(kind)


def free_udp_tcp_port() -> int:
    """Like :func:`free_port`, free for both UDP and TCP (a SIP listener uses both)."""
    return _port(socket.SOCK_DGRAM, socket.SOCK_STREAM)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def cli_env(**extra: str) -> dict:
    """The environment of a ``convergence`` process a test starts: the test process's without its
    ``CONVERGENCE_*`` variables (a developer's ``CONVERGENCE_CONFIG`` must not reach the tests),
    plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CONVERGENCE_")}, **extra}


class ServerProcess:
    """A running ``convergence serve``: ``output`` holds its log lines so far (a thread keeps
    reading them, so a chatty server never blocks on a full pipe); ``wait_for`` waits for one.

    With a ``launcher`` (a :class:`~convergence.forkserver.ForkServer`, the ``fork_server``
    fixture) the process is forked from it; without one it runs the ``convergence`` script."""

    def __init__(self, config_path: Path, args, cwd: Path, timeout: float = 30, launcher=None):
        env = cli_env()
        self.config_path = config_path
        command = ["--config", str(config_path), "serve", *args]
        if launcher is None:
            self.proc = subprocess.Popen([str(Path(sys.executable).parent / "convergence"), *command],
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         cwd=cwd, env=env)
        else:
            self.proc = launcher.launch(command, cwd, env)
        self.output: list[str] = []
        self._more = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.wait_for("convergence serving", timeout)
        except AssertionError:
            self.stop()
            raise RuntimeError("convergence serve did not start:\n" + "".join(self.output)) from None

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._more:
                self.output.append(line)
                self._more.notify_all()
        with self._more:
            self._more.notify_all()  # the end: waiters need not wait out their timeout

    def wait_for(self, text: str, timeout: float = 10, start: int = 0) -> str:
        """The first line from index ``start`` on that contains ``text`` (AssertionError after
        ``timeout`` seconds, or once the server's output has ended without it)."""
        deadline = time.monotonic() + timeout
        with self._more:
            while True:
                found = next((line for line in self.output[start:] if text in line), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"no log line with {text!r} within {timeout}s:\n"
                                         + "".join(self.output[-20:]))
                self._more.wait(left)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, then wait; returns the exit status (killing it if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout)
        return self.proc.returncode


@pytest.fixture(scope="session")
def fork_server():
    """The test session's :class:`~convergence.forkserver.ForkServer`, which ``serve`` forks from."""
    server = forkserver.ForkServer()
    yield server
    server.close()


@pytest.fixture
def run_convergence(tmp_path, fork_server):
    def run(*args, cwd=None, env: dict | None = None, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return fork_server.run([str(arg) for arg in args], cwd or tmp_path, cli_env(**(env or {})),
                               input=input, timeout=timeout)
    return run


@pytest.fixture
def serve(tmp_path, database_url, fork_server):
    running = []

    def start(config: dict | None = None, *args: str) -> ServerProcess:
        config = with_test_defaults({k: dict(v) for k, v in (config or {}).items()})
        config.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "data"))
        if database_url:
            config["server"].setdefault("database", database_url)
        path = tmp_path / f"convergence-{len(running)}.toml"
        path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
                                for name, table in config.items()))
        running.append(ServerProcess(path, args, tmp_path, launcher=fork_server))
        return running[-1]

    yield start
    for server in running:
        server.stop()
