"""The plugin author's test kit: a pytest plugin (entry point ``pytest11``), active wherever
convergence is installed.

Fixtures:

- ``make_core(overrides=None, plugins=None, load_entry_points=True)`` — a started
  :class:`~convergence.core.Core` on a fresh, migrated database; ``plugins`` (name → module or
  object) are registered before start-up. Stopped and dropped after the test.
- ``core`` — ``make_core()`` with every installed plugin.
- ``register_plugin(plugin, name=None)`` — register a plugin on ``core`` for one test.

Helpers: :class:`RecordingEndpoint`, an endpoint that keeps what it is given.

The database is in-memory SQLite, or PostgreSQL with ``--convergence-database URL`` (or
``CONVERGENCE_TEST_DATABASE``): each test then gets a schema of its own, dropped afterwards.
"""
from __future__ import annotations

import os
import uuid

import pytest

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


def open_test_database(url: str | None):
    """A fresh Database and a function that drops it: in-memory SQLite or a new PostgreSQL schema."""
    if not url:
        db = Database("sqlite://")
        return db, db.close
    schema = "cv_" + uuid.uuid4().hex[:12]
    admin = Database(url)
    with admin.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    db = Database(url, connect_args={"options": f"-csearch_path={schema}"})

    def drop():
        db.close()
        with admin.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    return db, drop


@pytest.fixture
def make_core(request):
    started = []

    def make(overrides: dict | None = None, plugins: dict | None = None,
             load_entry_points: bool = True) -> Core:
        db, drop = open_test_database(request.config.getoption("convergence_database"))
        overrides = dict(overrides or {})
        server = {"data_dir": str(request.getfixturevalue("tmp_path")), **overrides.pop("server", {})}
        config = load(None, {"server": server, **overrides})
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
