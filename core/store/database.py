"""The SQL store: engine set-up, sessions, the SQLite write lock and Alembic migrations.

Rules (measured in research/stack.md): never hold a transaction across network I/O; on SQLite one
process-wide write lock serializes writers (a writer waiting in SQLite's busy handler would freeze
the event loop) and writes start with ``BEGIN IMMEDIATE``; in-memory SQLite uses ``StaticPool``.

Several processes on one database (``serve`` and CLI commands, or two commands at once): a
migration is taken under a lock that spans processes, so two never race to create tables — a lock
file ``<database>.migrate-lock`` beside a SQLite file (``flock``), ``pg_advisory_xact_lock`` inside
the migration's transaction on PostgreSQL — each waited for at most ``lock_timeout`` seconds. A
SQLite writer waits ``BUSY_TIMEOUT`` for another process's write to end. Whatever goes wrong is a
:class:`DatabaseError` whose message is one line naming the database and the condition
(:func:`explain`): busy, read-only, missing, unreachable, or migrated by a newer release.
"""
from __future__ import annotations

import errno
import fcntl
import importlib.resources
import os
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util import CommandError
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool


class DatabaseError(Exception):
    """The database cannot be used (bad URL, unreachable, missing driver, busy, read-only, newer
    schema); the message, one line, says why."""


#: Milliseconds a SQLite statement waits for another process's write lock (SQLite's busy handler).
#: It is set before anything else on a new connection: switching a fresh file to WAL needs the lock.
BUSY_TIMEOUT = 2000
#: Seconds a migration waits for another process's migration to finish.
MIGRATION_LOCK_TIMEOUT = 30.0
#: The PostgreSQL advisory lock key migrations take (any constant; "cvmigr" in ASCII).
_ADVISORY_KEY = 0x63766D69677200

_BUSY = "busy: another process held its write lock for more than {busy:g} s; try again"
#: (what the driver says — every part, lower-cased —, what the operator reads), first match wins.
_CONDITIONS = (
    (("database is locked",), _BUSY),
    (("database is busy",), _BUSY),
    (("lock timeout",), "busy: another process's migration took more than {migration:g} s; try again"),
    (("readonly database",), "read-only (file, folder or URL mode=ro), and this command writes to it"),
    (("read-only transaction",), "read-only (default_transaction_read_only, or a standby), and this command writes to it"),
    (("unable to open database file",), "cannot be opened (a missing folder, or no permission)"),
    (("database \"", "does not exist"), "does not exist (create it, or fix [server] database)"),
    (("role \"", "does not exist"), "refused the login: the role does not exist"),
    (("password authentication failed",), "refused the login: password authentication failed"),
    (("connection refused",), "unreachable: connection refused (is the database server running?)"),
    (("no such file or directory", "socket"), "unreachable: no server socket (is the database server running?)"),
    (("could not translate host name",), "unreachable: unknown host"),
    (("name or service not known",), "unreachable: unknown host"),
    (("timeout expired",), "unreachable: connection timed out"),
    (("disk is full",), "cannot be written: the disk is full"),
    (("disk image is malformed",), "damaged: database disk image is malformed"),
    (("file is not a database",), "not a SQLite database"),
)


def condition(exc: BaseException) -> str:
    """What a database failure ``exc`` (SQLAlchemy, driver or OS error) means for an operator, in
    a few words, else the driver's first line."""
    orig = getattr(exc, "orig", None) or exc
    said = str(orig).strip()
    lowered = said.lower()
    for needles, text in _CONDITIONS:
        if all(needle in lowered for needle in needles):
            return text.format(busy=BUSY_TIMEOUT / 1000, migration=MIGRATION_LOCK_TIMEOUT)
    return (said.splitlines() or [type(orig).__name__])[0]


def _sqlite_pragmas(dbapi_conn, _record):
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)
    cursor = dbapi_conn.cursor()
    for pragma in (f"busy_timeout={BUSY_TIMEOUT}", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
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

    @property
    def is_file(self) -> bool:
        return self.is_sqlite and self.url.database not in (None, "", ":memory:")

    @property
    def location(self) -> str:
        """The URL without its password, a SQLite file's path made absolute (a relative
        ``data_dir`` means another database in another folder)."""
        url = self.url
        if self.is_file and not url.query.get("uri"):
            url = url.set(database=str(Path(url.database).absolute()))
        return url.render_as_string(hide_password=True)

    def error(self, exc: BaseException) -> DatabaseError:
        """``exc`` (from SQLAlchemy, the driver or the OS) as one line naming this database."""
        return DatabaseError(f"database {self.location}: {condition(exc)}")

    @contextmanager
    def errors(self):
        """Turn what the database raises inside into :class:`DatabaseError` (one line)."""
        try:
            yield
        except (SQLAlchemyError, OSError) as exc:
            raise self.error(exc) from exc

    def check(self) -> None:
        """Connect once (creating a SQLite file's folder), or raise DatabaseError naming the reason."""
        try:
            if self.is_file and not self.url.query.get("uri"):
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            raise DatabaseError(f"cannot connect to database {self.location}: {condition(exc)}") from exc

    # -- Alembic --
    def _alembic(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(importlib.resources.files("convergence.migrations")))
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", os.pathsep.join(self.version_locations))
        return cfg

    def _revisions(self, conn, script: ScriptDirectory) -> tuple[set[str], set[str], bool]:
        """(current, heads, up to date) read on ``conn``; DatabaseError for a revision this code
        does not know: a newer release migrated the database."""
        heads = set(script.get_heads())
        current = set(MigrationContext.configure(conn).get_current_heads())
        unknown = sorted(rev for rev in current if not self._known(script, rev))
        if unknown:
            raise DatabaseError(
                f"database {self.location} is at revision {', '.join(unknown)}, which this release "
                f"does not know: a newer Convergence migrated it (run that release, or restore a backup)")
        applied = {r.revision for r in script.iterate_revisions(tuple(current), "base")} if current else set()
        return current, heads, heads <= applied

    @staticmethod
    def _known(script: ScriptDirectory, revision: str) -> bool:
        try:
            return script.get_revision(revision) is not None
        except CommandError:
            return False

    def upgrade(self, revision: str = "heads", lock_timeout: float = MIGRATION_LOCK_TIMEOUT) -> None:
        """Migrate the schema, every branch (plugins') included (``serve`` does this at start-up).

        Nothing is locked when the database is up to date (every command but the first after an
        upgrade of the package). Otherwise the migration runs under the cross-process lock (module
        docstring), after checking again: a process that waited finds the work done."""
        self.check()
        cfg = self._alembic()
        script = ScriptDirectory.from_config(cfg)
        with self.errors():
            if revision == "heads":
                with self.engine.connect() as conn:
                    if self._revisions(conn, script)[2]:
                        return
            with self._migration_file_lock(lock_timeout), self._write_engine.begin() as conn:
                if self.url.get_backend_name() == "postgresql":
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_timeout * 1000)}")
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
                if revision == "heads" and self._revisions(conn, script)[2]:
                    return
                cfg.attributes["connection"] = conn
                try:
                    command.upgrade(cfg, revision)
                except CommandError as exc:
                    raise DatabaseError(f"database {self.location}: cannot migrate: {exc}") from exc

    @contextmanager
    def _migration_file_lock(self, timeout: float):
        """``flock`` on ``<database>.migrate-lock`` beside a SQLite file, waited for at most
        ``timeout`` seconds (polled: a gevent process keeps serving meanwhile)."""
        if not self.is_file or self.url.query.get("uri"):
            yield
            return
        path = Path(self.url.database + ".migrate-lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise DatabaseError(
                            f"database {self.location} is busy: another process's migration held "
                            f"{path.name} for more than {timeout:g} s; try again") from exc
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock

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
        with self.errors(), self.engine.connect() as conn:
            return self._revisions(conn, script)

    def close(self) -> None:
        self.engine.dispose()

