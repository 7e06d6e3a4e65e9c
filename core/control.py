"""The control path: an account change made in one process reaches every running server.

``convergence user add|del|passwd`` runs in a process of its own; the server that holds the live
sessions must hear of the change at once (roster pushes, sessions of a deleted account ended;
docs/operations.md). Every :class:`~convergence.core.Core` has a :class:`Control` that
**publishes** each change it makes after the change is committed, and ``convergence serve``
**listens** for the changes other processes publish and fires ``on_account`` for them, so the
plugins' ``on_account`` implementations react the same way to a change made in-process (in-band
registration) or elsewhere. The transport depends on the database, because the database is what
the processes share:

- **PostgreSQL**: ``NOTIFY`` on the channel ``convergence_accounts.<schema>`` (sent after the
  commit; ``channel_name``), ``LISTEN`` on a dedicated autocommit connection read by a greenlet.
  Every server on the schema hears every change, and none on another schema of the database.
- **SQLite** (file): a Unix domain socket ``<data_dir>/control.sock`` (mode 0600) that ``serve``
  binds; a publisher connects, writes its message lines and closes. Without a server there is no
  socket (or a stale one that refuses): the change is simply not announced (a debug line).
- **SQLite in memory** (tests): nothing to share, no control path.

A message is one line of JSON (:func:`encode` / :func:`decode`, no I/O):
``{"account": "bob", "change": "deleted", "origin": "<publisher id>"}``. A server ignores the
messages of its own ``origin``: it fired ``on_account`` already when it made the change. Delivery
is at most once: a change published while no server listens (or while the PostgreSQL connection is
being re-established) is not replayed; the database itself is always right.

**Requests** (``convergence status``) need an answer from one server, the one this configuration
runs: the CLI connects to the Unix socket ``<data_dir>/control.sock``, writes ``{"request":
"status"}`` and reads one line of JSON back (:meth:`Control.ask`; the server's answer is
``core.metrics.status()``). With SQLite that is the control socket above; with PostgreSQL
``serve`` binds the same socket for requests only (account changes still go by ``NOTIFY``), so
every server on a machine needs a ``data_dir`` of its own to be asked (a second one on the same
``data_dir`` serves without the socket, with a warning).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import gevent
from gevent import socket  # cooperative even where socket is not monkey-patched (the tests)
from gevent.server import StreamServer
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .addresses import AddressError

log = logging.getLogger(__name__)

CHANGES = ("created", "changed", "deleted")
CHANNEL = "convergence_accounts"  # PostgreSQL NOTIFY/LISTEN channel, per schema: channel_name
SOCKET_NAME = "control.sock"  # under data_dir, for SQLite
MAX_LINE = 1024  # bytes of one message line; a longer line ends the connection
CONNECT_TIMEOUT = 2.0  # seconds a publisher waits for the socket
ANSWER_TIMEOUT = 10.0  # seconds the CLI waits for a request's answer
MAX_ANSWER = 1 << 20  # bytes of an answer line
REQUESTS = ("status",)
RETRY = (1.0, 30.0)  # first and longest wait before reconnecting a lost LISTEN connection


# ---- the message (sans-IO) ---------------------------------------------------------------------

@dataclass(frozen=True)
class AccountChange:
    account: str  # the localpart
    change: str  # one of CHANGES
    origin: str = ""  # the publishing Control's id


def encode(message: AccountChange) -> bytes:
    """One line of JSON, without the line break."""
    return json.dumps({"account": message.account, "change": message.change,
                       "origin": message.origin}, ensure_ascii=False).encode()


def decode(data: bytes | str) -> AccountChange:
    """The message in ``data`` (one line of JSON); ValueError if it is not one."""
    fields = json.loads(data)  # JSONDecodeError is a ValueError
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    account, change, origin = fields.get("account"), fields.get("change"), fields.get("origin", "")
    if not isinstance(account, str) or not account:
        raise ValueError("no account")
    if change not in CHANGES:
        raise ValueError(f"change is not one of {', '.join(CHANGES)}")
    if not isinstance(origin, str):
        raise ValueError("origin is not a string")
    return AccountChange(account, change, origin)


def request_of(data: bytes | str) -> str | None:
    """The request a line asks (``{"request": "status"}``), or None for any other line."""
    try:
        fields = json.loads(data)
    except ValueError:
        return None
    return fields.get("request") if isinstance(fields, dict) else None


class NoServer(Exception):
    """No ``convergence serve`` answers on this configuration's control path."""


# ---- the control of one core -------------------------------------------------------------------

class Control:
    """Publishes this core's account changes; in ``serve``, listens for the others' (``listen``)."""

    def __init__(self, core):
        self.core = core
        self.origin = secrets.token_hex(8)
        db = core.db
        self.socket: SocketChannel | None = None  # where requests are asked and answered
        if not db.is_sqlite:
            self.channel = NotifyChannel(db)
            self.socket = SocketChannel(core.config.data_dir / SOCKET_NAME)
        elif db.url.database not in (None, "", ":memory:"):
            self.channel = self.socket = SocketChannel(core.config.data_dir / SOCKET_NAME)
        else:
            self.channel = None

    def describe(self) -> str:
        return self.channel.describe() if self.channel else "no control path (in-memory database)"

    def publish(self, account, change: str) -> None:
        """Announce a committed change of ``account`` (an Address). Never raises: the change is
        made; a server that does not hear of it sees it in the database."""
        if self.channel is not None:
            self.channel.publish(encode(AccountChange(account.local, change, self.origin)))

    def listen(self) -> None:
        """Start receiving (``serve``); OSError if the path is taken (another server on this
        data_dir) or the database refuses."""
        if self.channel is not None:
            self.channel.listen(self.receive, self.answer)
            log.info("control path: %s", self.describe())
        if self.socket is not None and self.socket is not self.channel:
            try:
                self.socket.listen(self.receive, self.answer, requests_only=True)
                log.info("control requests (convergence status): %s", self.socket.describe())
            except OSError as exc:
                log.warning("control requests: cannot listen on %s (%s): convergence status "
                            "cannot ask this server", self.socket.describe(), exc.strerror or exc)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.stop()
        if self.socket is not None and self.socket is not self.channel:
            self.socket.stop()

    def answer(self, request: str) -> bytes:
        """The answer to a request line's ``request`` (one line of JSON, without the break)."""
        if request == "status" and self.core.listeners is None:  # plugins' metrics come later
            body = {"error": "the server is starting; ask again in a moment"}
        elif request == "status":
            body = self.core.metrics.status()
        else:
            body = {"error": f"unknown request {request!r} (known: {', '.join(REQUESTS)})"}
        return json.dumps(body, ensure_ascii=False).encode()

    def ask(self, request: str) -> dict:
        """Ask the server of this configuration (the CLI); NoServer when none answers."""
        if self.socket is None:
            raise NoServer("no server can be asked: the database is in memory")
        answer = json.loads(self.socket.ask(json.dumps({"request": request}).encode()))
        if "error" in answer:
            raise NoServer(answer["error"])
        return answer

    def receive(self, data: bytes | str) -> None:
        """A message from another process: fire ``on_account`` for it (not for our own)."""
        try:
            message = decode(data)
            account = self.core.address(message.account)
        except (ValueError, AddressError) as exc:
            log.warning("control path: ignored a bad message (%s)", exc)
            return
        if message.origin == self.origin:
            return
        log.info("account %s %s (announced by another process)", account, message.change)
        try:
            self.core.hook.on_account(core=self.core, account=account, change=message.change,
                                      endpoint=None)
        except Exception:  # a plugin's failure must not end the listener
            log.exception("control path: on_account failed for %s %s", account, message.change)


# ---- transports --------------------------------------------------------------------------------

class SocketChannel:
    """SQLite: a Unix domain socket under data_dir, bound by the serving process."""

    def __init__(self, path: Path):
        self.path = path.absolute()
        self.server: StreamServer | None = None
        self.inode = None  # of the socket file we bound (stop removes only that one)

    def describe(self) -> str:
        return f"Unix socket {self.path}"

    def publish(self, line: bytes) -> None:
        if self.server is not None:
            return  # we are the server: nobody else listens on this data_dir
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(str(self.path))
                sock.sendall(line + b"\n")
        except (FileNotFoundError, ConnectionRefusedError):
            log.debug("control path: no server listens on %s", self.path)
        except OSError as exc:
            log.warning("control path: cannot reach the server on %s: %s", self.path, exc)

    def ask(self, line: bytes) -> bytes:
        """Write a request line, return the answer line (NoServer when nothing listens)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect(str(self.path))
                sock.settimeout(ANSWER_TIMEOUT)
                sock.sendall(line + b"\n")
                with sock.makefile("rb") as answers:
                    answer = answers.readline(MAX_ANSWER + 1)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoServer(f"no convergence serve is running on this configuration (nothing "
                           f"listens on {self.path})") from None
        except OSError as exc:
            raise NoServer(f"cannot ask the server on {self.path}: {exc}") from None
        if not answer.endswith(b"\n"):
            raise NoServer(f"the server on {self.path} did not answer")
        return answer

    def listen(self, receive, answer=None, requests_only: bool = False) -> None:
        """Bind and serve: message lines go to ``receive``; with ``answer``, request lines
        (``{"request": …}``) are answered with ``answer(request)`` instead."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # before listen(): nobody could connect yet
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        self.inode = os.stat(self.path).st_ino
        if requests_only:  # PostgreSQL: account changes come by NOTIFY, not here
            receive = self._ignore
        self.server = StreamServer(sock, lambda conn, _: self._serve(conn, receive, answer))
        self.server.start()

    @staticmethod
    def _ignore(line) -> None:
        log.debug("control requests: ignored a line that is not a request")

    def _remove_stale(self) -> None:
        """A socket file left by a server that died is removed; a live one means another server."""
        if not self.path.exists():
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(CONNECT_TIMEOUT)
            try:
                probe.connect(str(self.path))
            except ConnectionRefusedError:
                self.path.unlink()
                return
        raise OSError(98, "another convergence serve is using this data_dir")

    @staticmethod
    def _serve(conn, receive, answer) -> None:
        with conn, conn.makefile("rb") as lines:
            while True:
                line = lines.readline(MAX_LINE + 1)
                if not line or not line.endswith(b"\n"):
                    return  # closed, or a line too long
                request = request_of(line) if answer is not None else None
                if request is None:
                    receive(line)
                else:
                    conn.sendall(answer(request) + b"\n")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            try:
                if os.stat(self.path).st_ino == self.inode:  # still ours
                    self.path.unlink()
            except FileNotFoundError:
                pass


def channel_name(conn) -> str:
    """The NOTIFY channel of the schema ``conn`` works in: ``convergence_accounts.<schema>``.

    NOTIFY reaches every session of the *database*, so servers on other schemas of it (another
    installation sharing the database, each test of the suite) must listen elsewhere."""
    schema = conn.execute(text("SELECT current_schema()")).scalar()
    return f"{CHANNEL}.{schema}"[:63]  # an identifier: NAMEDATALEN - 1 bytes


class NotifyChannel:
    """PostgreSQL: NOTIFY after the commit, LISTEN on a connection of its own."""

    def __init__(self, db):
        self.db = db
        self.conn = None
        self.greenlet = None
        self._name = None

    @property
    def name(self) -> str:
        if self._name is None:
            with self.db.read_connection() as conn:
                self._name = channel_name(conn)
        return self._name

    def describe(self) -> str:
        return f"PostgreSQL LISTEN {self.name} on {self.db.url.render_as_string()}"

    def publish(self, line: bytes) -> None:
        try:
            with self.db.write_connection() as conn:
                conn.execute(text("SELECT pg_notify(:channel, :payload)"),
                             {"channel": self.name, "payload": line.decode()})
        except SQLAlchemyError as exc:
            log.warning("control path: NOTIFY failed: %s", exc)

    def _connect(self):
        import psycopg  # the postgres extra; only imported for a PostgreSQL database

        url = self.db.url.set(drivername="postgresql")
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                               connect_timeout=5)
        conn.execute('LISTEN "{}"'.format(self.name.replace('"', '""')))
        return conn

    def listen(self, receive, answer=None) -> None:
        import psycopg

        try:
            self.conn = self._connect()
        except psycopg.Error as exc:
            raise OSError(f"cannot LISTEN on the database: {exc}") from exc
        self.greenlet = gevent.spawn(self._run, receive)

    def _run(self, receive) -> None:
        import psycopg

        wait = RETRY[0]
        while True:
            try:
                if self.conn is None:
                    self.conn = self._connect()
                    log.info("control path: listening again on %s", self.name)
                    wait = RETRY[0]
                for notify in self.conn.notifies():
                    receive(notify.payload)
            except psycopg.Error as exc:
                log.warning("control path: LISTEN connection lost (%s); retrying in %.0f s", exc, wait)
                self._close()
                gevent.sleep(wait)  # back-off between reconnection attempts
                wait = min(wait * 2, RETRY[1])

    def _close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()

    def stop(self) -> None:
        if self.greenlet is not None:
            self.greenlet.kill()
            self.greenlet = None
        self._close()
