"""The SQL store: engine set-up, sessions, the SQLite write lock and Alembic migrations.

Rules (measured in research/stack.md): never hold a transaction across network I/O; on SQLite one
process-wide write lock serializes writers (a writer waiting in SQLite's busy handler would freeze
the event loop) and writes start with ``BEGIN IMMEDIATE``; in-memory SQLite uses ``StaticPool``.
"""
from __future__ import annotations

import importlib.resources
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool


class DatabaseError(Exception):
    """The database cannot be used (bad URL, unreachable, missing driver); the message says why."""


def _sqlite_pragmas(dbapi_conn, _record):
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=2000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn):
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


class Database:
    """One engine, read sessions, write sessions and the schema's migrations."""

    def __init__(self, url: str, connect_timeout: float = 5.0, **engine_options):
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DatabaseError(f"database URL {url!r} is not valid: {exc}") from exc
        self.url = parsed
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        options = dict(engine_options)
        if self.is_sqlite:
            options.setdefault("connect_args", {}).update(check_same_thread=False)
            if parsed.database in (None, "", ":memory:"):
                options["poolclass"] = StaticPool
        elif parsed.get_backend_name() == "postgresql":
            options.setdefault("connect_args", {}).setdefault("connect_timeout", max(1, int(connect_timeout)))
        try:
            self.engine = create_engine(parsed, **options)
        except (ImportError, SQLAlchemyError) as exc:
            raise DatabaseError(f"cannot use database {parsed.render_as_string()}: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(write=True)
        self._writer = sessionmaker(self._write_engine, expire_on_commit=False)
        # threading.RLock is gevent's cooperative lock once ``monkey.patch_all()`` has run.
        self._write_lock = threading.RLock() if self.is_sqlite else None
        self.version_locations = [str(importlib.resources.files("convergence.migrations") / "versions")]

    @contextmanager
    def read(self) -> Session:
        """A session for queries; nothing it changes is committed."""
        with self._reader() as session:
            yield session

    def read_connection(self) -> Connection:
        """Like ``read``, a plain connection (use as a context manager): for Core statements built
        once, on hot paths where a Session's cost exceeds the query's."""
        return self.engine.connect()

    @contextmanager
    def write(self) -> Session:
        """A session committed on success, rolled back on error. Do no network I/O inside."""
        with self._write_lock or nullcontext(), self._writer() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Connection:
        """Like ``write``, a plain connection: for Core statements built once (no Session cost)."""
        with self._write_lock or nullcontext(), self._write_engine.begin() as conn:
            yield conn

    def check(self) -> None:
        """Connect once (creating a SQLite file's folder), or raise DatabaseError naming the reason."""
        if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            reason = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
            raise DatabaseError(f"cannot connect to database {self.url.render_as_string()}: {reason}") from exc

    # -- Alembic --
    def _alembic(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(importlib.resources.files("convergence.migrations")))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", os.pathsep.join(self.version_locations))
        return cfg

    def upgrade(self, revision: str = "heads") -> None:
        """Migrate the schema, every branch (plugins') included (``serve`` does this at start-up)."""
        self.check()
        cfg = self._alembic()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def revision(self, message: str) -> None:
        """Autogenerate a revision in ``migrations/versions/`` from the models (developers, editable install)."""
        cfg = self._alembic()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=message, autogenerate=True, head="convergence@head")

    def current(self) -> tuple[set[str], set[str], bool]:
        """(the database's revisions, the newest revisions shipped, whether every one is applied)."""
        self.check()
        script = ScriptDirectory.from_config(self._alembic())
        heads = set(script.get_heads())
        with self.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        applied = {r.revision for r in script.iterate_revisions(tuple(current), "base")} if current else set()
        return current, heads, heads <= applied

    def close(self) -> None:
        self.engine.dispose()

