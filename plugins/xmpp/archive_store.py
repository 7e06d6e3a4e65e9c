"""Message archive repository (XEP-0313): each account's 1:1 messages and archiving preferences.

The tables belong to the XMPP plugin (revision ``xmpp_0005_archive`` of its Alembic branch):
``mam_messages`` holds one row per archived message and account — a message between two local
accounts is two rows, one in each archive — in archive order (``id``), with its XEP-0359 stanza
id (unique within the account's archive: the archive id of XEP-0313 §4.1.2), the other party
(``with_jid`` full, ``with_bare``: the ``with`` filter, §4.1.1), the time the server saw it (UTC),
the id the sender gave it (to find the stanza id of an offline copy) and the <message/> as XML.
``mam_prefs`` keeps an account's preferences (§7: default ``always``/``never``/``roster`` and the
``always``/``never`` JID lists). Deleting an account deletes its archive and preferences.
"""
from __future__ import annotations

import functools
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (JSON, DateTime, ForeignKey, Index, String, Text, UniqueConstraint, and_,
                        delete, func, select)
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.database import BUSY_TIMEOUT
from convergence.store.models import Account, Base


class ArchivedMessage(Base):
    """One message in one account's archive (XEP-0313 §4)."""

    __tablename__ = "mam_messages"
    __table_args__ = (UniqueConstraint("account_id", "stanza_id"),
                      Index("ix_mam_messages_account_with", "account_id", "with_bare"))

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    stanza_id: Mapped[str] = mapped_column(String(64))
    with_jid: Mapped[str] = mapped_column(String(3071))
    with_bare: Mapped[str] = mapped_column(String(2047))
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    message_id: Mapped[str] = mapped_column(String(255))
    stanza: Mapped[str] = mapped_column(Text)


class ArchivePrefs(Base):
    """An account's archiving preferences (XEP-0313 §7)."""

    __tablename__ = "mam_prefs"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    default: Mapped[str] = mapped_column(String(8))
    always: Mapped[list] = mapped_column(JSON, default=list)
    never: Mapped[list] = mapped_column(JSON, default=list)


@dataclass(frozen=True)
class Prefs:
    """XEP-0313 §7: what to archive; ``always``/``never`` hold bare JIDs (``never`` wins)."""

    default: str = "always"
    always: tuple = ()
    never: tuple = ()

    def decide(self, peer_bare: str, in_roster) -> bool:
        """Whether a message with ``peer_bare`` is archived; ``in_roster()`` is asked only for
        the ``roster`` default."""
        if peer_bare in self.never:
            return False
        if peer_bare in self.always or self.default == "always":
            return True
        return self.default == "roster" and in_roster()


class Row(NamedTuple):
    """An archived message to write: ``account`` is the archive's owner (an account name).
    A tuple: one is made per message and account on the routing path."""

    account: str
    stanza_id: str
    with_jid: str
    with_bare: str
    created_at: datetime
    message_id: str
    stanza: str


@dataclass(frozen=True)
class Entry:
    stanza_id: str
    created_at: datetime
    stanza: str


@dataclass
class Filter:
    """A query's filters (XEP-0313 §4.1.1, and the #extended ``ids``/``before-id``/``after-id``)."""

    with_jid: str | None = None  # a bare JID matches every resource, a full one only itself
    start: datetime | None = None
    end: datetime | None = None
    ids: list | None = None
    after_id: str | None = None
    before_id: str | None = None
    extra: dict = field(default_factory=dict)


class UnknownId(LookupError):
    """An RSM or #extended id that is not in the archive (XEP-0313 §4.2.1: item-not-found)."""


# ---- writing -----------------------------------------------------------------------------------
def append(db: Database, rows: list[Row], in_roster, writer=None) -> int:
    """Write ``rows``: those of names that are accounts (others — service users — have no
    archive), as the owners' preferences allow (``in_roster(account, peer)`` for the ``roster``
    default), in one transaction: ``writer(values)`` (a :class:`SqliteWriter` in a worker
    thread) or the store's own. Returns how many were written."""
    if not rows:
        return 0
    with db.read() as session:
        names = {r.account for r in rows}
        ids = dict(session.execute(select(Account.name, Account.id).where(Account.name.in_(names))).all())
        prefs = {}
        for r in session.scalars(select(ArchivePrefs).where(ArchivePrefs.account_id.in_(ids.values()))):
            prefs[r.account_id] = Prefs(r.default, tuple(r.always or ()), tuple(r.never or ()))
    when = text = None  # SQLite: the message's two rows share one formatted time
    values = []
    for r in rows:
        account_id = ids.get(r.account)
        if account_id is None:
            continue
        wanted = prefs.get(account_id)
        if wanted is not None and not wanted.decide(r.with_bare, lambda: in_roster(r.account, r.with_bare)):
            continue
        if db.is_sqlite and r.created_at is not when:
            when, text = r.created_at, _sqlite_datetime(r.created_at)
        values.append((account_id, r.stanza_id, r.with_jid, r.with_bare,
                       text if db.is_sqlite else r.created_at, r.message_id, r.stanza))
    if not values:
        return 0
    if writer is not None:
        writer(values)
        return len(values)
    # the driver's own bulk paths: the ORM's bulk insert cost ~45 µs a row more. An account
    # deleted since it was looked up fails the foreign key: the caller retries, without it.
    with db.write() as session:
        conn = session.connection()
        if db.is_sqlite:
            for start in range(0, len(values), _CHUNK):
                chunk = values[start:start + _CHUNK]
                conn.exec_driver_sql(_insert_rows(len(chunk)), tuple(v for row in chunk for v in row))
        else:  # PostgreSQL: COPY in binary (psycopg formats the rows in C)
            with conn.connection.driver_connection.cursor() as cursor:
                with cursor.copy(_COPY) as copy:
                    copy.set_types(_COPY_TYPES)
                    for row in values:
                        copy.write_row(row)
    return len(values)


class SqliteWriter:
    """Archive inserts on a SQLite connection of their own, for a worker thread: ``sqlite3``
    releases the GIL while SQLite works, so the event loop goes on meanwhile (its SQLAlchemy
    engine and write lock belong to the loop's thread). SQLite's file lock orders it with the
    store's writers (``busy_timeout``). None for an in-memory database (one connection only)."""

    @classmethod
    def of(cls, db: Database):
        url = db.url
        if not db.is_sqlite or url.database in (None, "", ":memory:") or "mode=memory" in url.database:
            return None
        return cls(url.database, str(url.query.get("uri", "")).lower() in ("true", "1"))

    def __init__(self, path: str, uri: bool = False):
        self.path, self.uri = path, uri
        self.conn = None

    def __call__(self, values: list) -> None:
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, uri=self.uri, isolation_level=None,
                                        check_same_thread=False)  # one call at a time, any thread
            for pragma in (f"busy_timeout={BUSY_TIMEOUT}", "synchronous=NORMAL", "foreign_keys=ON"):
                self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(values), _CHUNK):  # one statement a chunk: SQLite works
                chunk = values[start:start + _CHUNK]      # with the GIL released, once
                self.conn.execute(_insert_rows(len(chunk)), [v for row in chunk for v in row])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


_INSERT = ("INSERT INTO mam_messages (account_id, stanza_id, with_jid, with_bare, created_at, "
           "message_id, stanza) ")
#: rows per multi-row INSERT on SQLite: 7 parameters each, within SQLite's 32766 (3.32+)
_CHUNK = 500


@functools.lru_cache(maxsize=8)
def _insert_rows(n: int) -> str:
    return _INSERT + "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n)


_COPY = ("COPY mam_messages (account_id, stanza_id, with_jid, with_bare, created_at, message_id, "
         "stanza) FROM STDIN (FORMAT BINARY)")
_COPY_TYPES = ("int4", "varchar", "varchar", "varchar", "timestamp", "varchar", "text")


def _sqlite_datetime(when: datetime) -> str:
    """How SQLAlchemy's DateTime stores a datetime in SQLite (it compares them as text)."""
    return when.isoformat(" ", "microseconds")  # as strftime("%Y-%m-%d %H:%M:%S.%f"), 3× cheaper


def purge(db: Database, older_than: datetime) -> int:
    """Delete every archived message older than ``older_than`` (retention); returns how many."""
    with db.write() as session:
        return session.execute(delete(ArchivedMessage).where(ArchivedMessage.created_at < older_than)).rowcount


def stanza_id_of(db: Database, account: str, peer_bare: str, message_id: str) -> str | None:
    """The stanza id the newest archived message ``message_id`` with ``peer_bare`` got (an offline
    message delivered later carries the id it has in the archive: XEP-0313 §5, ejabberd #1331)."""
    with db.read_connection() as conn:
        return conn.execute(
            select(ArchivedMessage.stanza_id).join(Account, Account.id == ArchivedMessage.account_id)
            .where(Account.name == account, ArchivedMessage.with_bare == peer_bare,
                   ArchivedMessage.message_id == message_id)
            .order_by(ArchivedMessage.id.desc()).limit(1)).scalar()


# ---- preferences -------------------------------------------------------------------------------
def get_prefs(db: Database, account: str) -> Prefs:
    with db.read() as session:
        row = session.scalar(select(ArchivePrefs).join(Account, Account.id == ArchivePrefs.account_id)
                             .where(Account.name == account))
        return Prefs() if row is None else Prefs(row.default, tuple(row.always), tuple(row.never))


def set_prefs(db: Database, account: str, prefs: Prefs) -> None:
    with db.write() as session:
        account_id = session.scalar(select(Account.id).where(Account.name == account))
        row = session.get(ArchivePrefs, account_id)
        if row is None:
            row = ArchivePrefs(account_id=account_id)
            session.add(row)
        row.default, row.always, row.never = prefs.default, list(prefs.always), list(prefs.never)


# ---- reading -----------------------------------------------------------------------------------
def _row_id(conn, model, scope: list, stanza_id: str) -> int:
    found = conn.execute(select(model.id).where(*scope, model.stanza_id == stanza_id)).scalar()
    if found is None:
        raise UnknownId(stanza_id)
    return found


def page(conn, model, stamp, scope: list, narrow: list, where: Filter, columns: list,
         max_items: int, after: str | None = None, before: str | None = None,
         index: int | None = None) -> tuple[list, int, int, bool]:
    """A page of the archive ``scope`` (conditions on ``model``, which has ``id`` in archive order
    and ``stanza_id``; ``stamp`` is its time column) narrowed by the conditions ``narrow`` (the
    caller's ``with``) and ``where``'s times and ids: (rows of ``columns``, count of the whole
    result set, index of the first row in it, complete). Shared by the accounts' archives and
    the rooms' (``muc_store``). An id (RSM or #extended) must be in ``scope``: ``UnknownId``.

    RSM (XEP-0059): ``after`` an id: the ``max_items`` after it; ``before`` an id: the ones
    before it (``""``: the last page); ``index``: from that position; none: the first page.
    ``complete`` (XEP-0313 §4.3): no more results in the paging direction."""
    conds = [*scope, *narrow]
    if where.start is not None:
        conds.append(stamp >= where.start)
    if where.end is not None:
        conds.append(stamp <= where.end)
    if where.ids is not None:
        conds.append(model.stanza_id.in_(where.ids))
    if where.after_id is not None:
        conds.append(model.id > _row_id(conn, model, scope, where.after_id))
    if where.before_id is not None:
        conds.append(model.id < _row_id(conn, model, scope, where.before_id))
    base = and_(*conds)
    count = conn.execute(select(func.count()).select_from(model).where(base)).scalar()
    backwards = before is not None
    if after:
        page_where = and_(base, model.id > _row_id(conn, model, scope, after))
    elif before:
        page_where = and_(base, model.id < _row_id(conn, model, scope, before))
    else:
        page_where = base
    order = model.id.desc() if backwards else model.id
    statement = select(model.id, *columns).where(page_where).order_by(order).limit(max_items + 1)
    if index is not None:
        statement = statement.offset(index)
    rows = conn.execute(statement).all()
    more = len(rows) > max_items
    rows = rows[:max_items]
    if backwards:
        rows.reverse()
    if rows:
        first = conn.execute(select(func.count()).select_from(model)
                             .where(base, model.id < rows[0].id)).scalar()
    else:
        first = index or 0
    return rows, count, first, not more


def query(db: Database, account: str, where: Filter, max_items: int, after: str | None = None,
          before: str | None = None, index: int | None = None
          ) -> tuple[list[Entry], int, int, bool]:
    """A page of ``account``'s archive in archive order (see :func:`page`), as entries."""
    with db.read_connection() as conn:
        account_id = conn.execute(select(Account.id).where(Account.name == account)).scalar()
        if account_id is None:
            return [], 0, 0, True
        narrow = []
        if where.with_jid is not None:
            column = ArchivedMessage.with_jid if "/" in where.with_jid else ArchivedMessage.with_bare
            narrow.append(column == where.with_jid)
        rows, count, first, complete = page(
            conn, ArchivedMessage, ArchivedMessage.created_at,
            [ArchivedMessage.account_id == account_id], narrow, where,
            [ArchivedMessage.stanza_id, ArchivedMessage.created_at, ArchivedMessage.stanza],
            max_items, after, before, index)
        return [Entry(r.stanza_id, r.created_at, r.stanza) for r in rows], count, first, complete


def bounds(db: Database, account: str) -> tuple[Entry | None, Entry | None]:
    """The first and the last message of ``account``'s archive (metadata, XEP-0313 §6)."""
    with db.read_connection() as conn:
        ends = []
        for order in (ArchivedMessage.id, ArchivedMessage.id.desc()):
            row = conn.execute(select(ArchivedMessage.stanza_id, ArchivedMessage.created_at)
                               .join(Account, Account.id == ArchivedMessage.account_id)
                               .where(Account.name == account).order_by(order).limit(1)).first()
            ends.append(None if row is None else Entry(row.stanza_id, row.created_at, ""))
        return ends[0], ends[1]
