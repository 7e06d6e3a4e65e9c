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
import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
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


class Item(NamedTuple):
    """A message to archive, made once per message on the routing path: in the archive of
    ``sender`` and of ``recipient`` (account names; None: not an account here, or not archived
    there), each with the other party as ``with``. ``created_at`` is :func:`timestamp`'s integer."""

    stanza_id: str
    created_at: int
    message_id: str
    stanza: str
    sender: str | None
    sender_jid: str
    sender_bare: str
    recipient: str | None
    recipient_jid: str
    recipient_bare: str


def timestamp(when: datetime) -> int:
    """A UTC time as an item's ``created_at``: microseconds since the epoch (``now`` gives the
    current one). The insert makes the column's value of it, in the database's thread or process
    rather than the event loop's (``_sqlite_insert``, ``_POSTGRESQL_INSERT``)."""
    return (when - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def now() -> int:
    """The current time as an item's ``created_at`` (:func:`timestamp`), cheaply: no datetime."""
    return time.time_ns() // 1000


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
def append(db: Database, items: list[Item], in_roster, writer=None) -> int:
    """Write ``items``: one row in the sender's archive and one in the recipient's, for the names
    that are accounts (others — service users, deleted accounts — have no archive), as the
    owners' preferences allow (``in_roster(account, peer)`` for the ``roster`` default), in one
    statement: ``writer(payload)`` (a :class:`SqliteWriter` in a worker thread) or the store's own.
    Returns how many rows were written. An item already in an archive (its stanza id there) is
    not written there again, rather than failing its whole batch (which would then be retried for
    ever, holding up every message after it).

    The database itself makes the rows of the items and looks the owners' account ids up (SQLite:
    the items' fields bound as they are, ``_sqlite_insert``; PostgreSQL: the batch as one JSON
    array): Python does nothing per row (rows built, looked up and bound in Python cost about as
    much as routing the message, on the event loop's thread)."""
    if not items:
        return 0
    prefs = {}
    with db.read_connection() as conn:  # usually none: only accounts that set preferences have them
        if conn.execute(_ANY_PREFS).first() is not None:
            owners = ({i.sender for i in items} | {i.recipient for i in items}) - {None}
            prefs = {name: Prefs(default, tuple(always or ()), tuple(never or ())) for name, default, always, never
                     in conn.execute(select(Account.name, ArchivePrefs.default, ArchivePrefs.always,
                                            ArchivePrefs.never)
                                     .join(ArchivePrefs, ArchivePrefs.account_id == Account.id)
                                     .where(Account.name.in_(owners)))}
    if prefs:
        items = [_as_preferred(i, prefs, in_roster) for i in items]
    if writer is not None:
        return writer(items)
    with db.write() as session:
        conn = session.connection()
        if db.is_sqlite:
            return sum(conn.exec_driver_sql(_sqlite_insert(len(chunk)), tuple(chain.from_iterable(chunk))).rowcount
                       for chunk in _chunks(items))
        return conn.exec_driver_sql(_POSTGRESQL_INSERT, {"items": json.dumps(items)}).rowcount


#: whether any account has preferences: the batch's owners are looked up only then (a lookup of
#: hundreds of names costs the event loop ~0.5 ms a batch; this one ~20 µs)
_ANY_PREFS = select(ArchivePrefs.account_id).limit(1)


def _as_preferred(item: Item, prefs: dict, in_roster) -> Item:
    """``item`` without the owners whose preferences (XEP-0313 §7) keep it out of their archive."""
    for owner, peer, side in ((item.sender, item.recipient_bare, "sender"),
                              (item.recipient, item.sender_bare, "recipient")):
        if owner in prefs and not prefs[owner].decide(peer, lambda o=owner, p=peer: in_roster(o, p)):
            item = item._replace(**{side: None})
    return item


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

    def __call__(self, items: list[Item]) -> int:
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, uri=self.uri, isolation_level=None,
                                        check_same_thread=False)  # one call at a time, any thread
            for pragma in (f"busy_timeout={BUSY_TIMEOUT}", "synchronous=NORMAL", "foreign_keys=ON",
                           *_WRITER_PRAGMAS):
                self.conn.execute(f"PRAGMA {pragma}")
        with self.conn:  # a transaction: committed, or rolled back on an error
            return sum(self.conn.execute(_sqlite_insert(len(chunk)), list(chain.from_iterable(chunk))).rowcount
                       for chunk in _chunks(items))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


#: the writer's page cache and WAL checkpoint interval (pages): the archive's index pages stay in
#: memory between batches and the WAL is copied back once per 64 MiB instead of per 4 MiB
#: (bench/README.md, "Message archive, stop 12": SQLite's CPU per row 16.8 → 11.4 µs)
_WRITER_PRAGMAS = ("cache_size=-65536", "wal_autocheckpoint=16384")

_INSERT = "INSERT INTO mam_messages (account_id, stanza_id, with_jid, with_bare, created_at, message_id, stanza)"
#: items per statement on SQLite: 10 parameters each, within SQLite's 32766 (3.32+)
_CHUNK = 500


def _chunks(items: list) -> list:
    return [items[start:start + _CHUNK] for start in range(0, len(items), _CHUNK)]


@functools.lru_cache(maxsize=8)
def _sqlite_insert(n: int) -> str:
    """The rows of ``n`` items, each item's fields bound in order: for each item (the outer loop:
    CROSS JOIN fixes SQLite's loop order, so rows are made, and numbered, in archive order) the
    sender's row, then the recipient's, where the owner is an account."""
    return _INSERT + """
WITH item(stanza_id, created_at, message_id, stanza, s, s_jid, s_bare, r, r_jid, r_bare) AS (VALUES """ \
        + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * n) + """),
side(k) AS (VALUES (0), (1))
SELECT accounts.id, item.stanza_id, CASE k WHEN 0 THEN r_jid ELSE s_jid END, CASE k WHEN 0 THEN r_bare ELSE s_bare END,
       strftime('%Y-%m-%d %H:%M:%S', item.created_at / 1000000, 'unixepoch')
         || printf('.%06d', item.created_at % 1000000), item.message_id, item.stanza
FROM item CROSS JOIN side CROSS JOIN accounts WHERE accounts.name = CASE k WHEN 0 THEN s ELSE r END
ON CONFLICT DO NOTHING"""


#: PostgreSQL: the items as one JSON array, each item's two rows in order (position, side)
_POSTGRESQL_INSERT = _INSERT + """
WITH item AS (SELECT n, value FROM json_array_elements(%(items)s::json) WITH ORDINALITY AS e(value, n)),
owned AS (
  SELECT n, 0 AS side, value->>4 AS owner, value->>8 AS with_jid, value->>9 AS with_bare, value FROM item
  UNION ALL
  SELECT n, 1, value->>7, value->>5, value->>6, value FROM item)
SELECT accounts.id, value->>0, with_jid, with_bare,
       timestamp 'epoch' + CAST(value->>1 AS bigint) * interval '1 microsecond', value->>2, value->>3
FROM owned JOIN accounts ON accounts.name = owned.owner ORDER BY n, side
ON CONFLICT DO NOTHING"""


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
