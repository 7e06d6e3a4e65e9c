"""Persistent rooms of Multi-User Chat (XEP-0045 §10.2 ``muc#roomconfig_persistentroom``) in SQL.

The tables belong to the XMPP plugin (revision ``xmpp_0003_muc`` of its Alembic branch ``xmpp``):
``muc_rooms`` (a room's configuration as JSON and its subject), ``muc_affiliations`` (owner,
admin, member, outcast by bare JID, §5.2) and ``muc_history`` (the room's groupchat messages,
§7.2.14). Without the message archive (``[xmpp] archive = false``) it keeps at most the room's
``history`` setting: older rows are deleted as new ones come. With it, ``muc_history`` is also
the room's archive (XEP-0313, revision ``xmpp_0006_muc_archive`` adds each message's XEP-0359
``stanza_id``): rows stay until ``archive_retention`` removes them, joining reads only the newest
``history`` of them, and MAM queries page through all (``archive_page``). Only persistent rooms
are stored; a temporary room lives in memory and ends with its last occupant. Deleting a room
deletes what hangs off it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.models import Base, utcnow

from . import archive_store
from .muc import HistoryEntry


class MucRoom(Base):
    __tablename__ = "muc_rooms"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(1023), unique=True)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    subject: Mapped[str] = mapped_column(Text, default="")
    subject_by: Mapped[str] = mapped_column(String(1023), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class MucAffiliation(Base):
    __tablename__ = "muc_affiliations"

    room_id: Mapped[int] = mapped_column(ForeignKey("muc_rooms.id", ondelete="CASCADE"), primary_key=True)
    jid: Mapped[str] = mapped_column(String(3071), primary_key=True)
    affiliation: Mapped[str] = mapped_column(String(16))


class MucHistory(Base):
    __tablename__ = "muc_history"
    __table_args__ = (Index("ix_muc_history_room_stanza_id", "room_id", "stanza_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("muc_rooms.id", ondelete="CASCADE"), index=True)
    nick: Mapped[str] = mapped_column(String(1023))
    jid: Mapped[str] = mapped_column(String(3071))
    stamp: Mapped[datetime] = mapped_column(DateTime, index=True)
    body: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[str] = mapped_column(Text, default="")  # other payloads, serialized XML
    stanza_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # archived rooms (XEP-0359)


def _room_id(session, name: str) -> int | None:
    return session.scalar(select(MucRoom.id).where(MucRoom.name == name))


def load(db: Database, name: str, history: int):
    """(config, subject, subject_by, {bare JID: affiliation}, [HistoryEntry] oldest first) of a
    stored room, or None."""
    with db.read() as session:
        row = session.scalar(select(MucRoom).where(MucRoom.name == name))
        if row is None:
            return None
        affiliations = dict(session.execute(select(MucAffiliation.jid, MucAffiliation.affiliation)
                                            .where(MucAffiliation.room_id == row.id)).all())
        rows = session.execute(select(*_ENTRY).where(MucHistory.room_id == row.id)
                               .order_by(MucHistory.id.desc()).limit(history)).all()
        entries = [_entry(r) for r in reversed(rows)]
        return dict(row.config), row.subject, row.subject_by, affiliations, entries


def save(db: Database, name: str, config: dict, subject: str, subject_by: str,
         affiliations: dict | None = None) -> None:
    """Create or update a room; ``affiliations`` (bare JID text → affiliation) replace the stored
    ones when given."""
    with db.write() as session:
        row = session.scalar(select(MucRoom).where(MucRoom.name == name))
        if row is None:
            row = MucRoom(name=name, config=config, subject=subject, subject_by=subject_by)
            session.add(row)
            session.flush()
        else:
            row.config, row.subject, row.subject_by = config, subject, subject_by
        if affiliations is not None:
            session.execute(delete(MucAffiliation).where(MucAffiliation.room_id == row.id))
            session.add_all(MucAffiliation(room_id=row.id, jid=jid, affiliation=value)
                            for jid, value in affiliations.items())


_ENTRY = (MucHistory.nick, MucHistory.jid, MucHistory.stamp, MucHistory.body, MucHistory.subject,
          MucHistory.extra, MucHistory.stanza_id)


def _entry(row) -> HistoryEntry:
    nick, jid, stamp, body, subject, extra, stanza_id = row
    return HistoryEntry(nick, jid, stamp, body, subject,
                        tuple(ET.fromstring(f"<x>{extra}</x>")) if extra else (), stanza_id)


def add_history(db: Database, name: str, entry: HistoryEntry, keep: int | None) -> None:
    """Keep ``entry``, and at most the ``keep`` newest entries of the room (None: all of them,
    the room's archive: retention removes them)."""
    extra = "".join(ET.tostring(x, encoding="unicode") for x in entry.extra)
    with db.write() as session:
        room_id = _room_id(session, name)
        if room_id is None:
            return
        session.add(MucHistory(room_id=room_id, nick=entry.nick, jid=entry.jid, stamp=entry.stamp,
                               body=entry.body, subject=entry.subject, extra=extra,
                               stanza_id=entry.stanza_id))
        if keep is None:
            return
        session.flush()
        oldest_kept = session.scalar(select(MucHistory.id).where(MucHistory.room_id == room_id)
                                     .order_by(MucHistory.id.desc()).offset(keep - 1).limit(1))
        if oldest_kept is not None:
            session.execute(delete(MucHistory).where(MucHistory.room_id == room_id,
                                                     MucHistory.id < oldest_kept))


def archive_page(db: Database, name: str, where: archive_store.Filter, nick: str | None,
                 max_items: int, after: str | None = None, before: str | None = None,
                 index: int | None = None) -> tuple[list[HistoryEntry], int, int, bool]:
    """A page of room ``name``'s archive (XEP-0313 on a room; ``nick``: only that occupant's
    messages), as ``archive_store.page`` pages an account's: (entries, count, first, complete)."""
    with db.read_connection() as conn:
        room_id = conn.execute(select(MucRoom.id).where(MucRoom.name == name)).scalar()
        if room_id is None:
            return [], 0, 0, True
        rows, count, first, complete = archive_store.page(
            conn, MucHistory, MucHistory.stamp,
            [MucHistory.room_id == room_id, MucHistory.stanza_id.is_not(None)],
            [] if nick is None else [MucHistory.nick == nick], where, list(_ENTRY),
            max_items, after, before, index)
        return [_entry(r[1:]) for r in rows], count, first, complete


def purge(db: Database, older_than: datetime) -> int:
    """Archive retention: delete the rooms' messages older than ``older_than``."""
    with db.write() as session:
        return session.execute(delete(MucHistory).where(MucHistory.stamp < older_than)).rowcount


def remove(db: Database, name: str) -> None:
    with db.write() as session:
        session.execute(delete(MucRoom).where(MucRoom.name == name))


def public_rooms(db: Database) -> list[tuple[str, str]]:
    """(room name, its configured name) of every stored room (public ones are filtered by caller)."""
    with db.read() as session:
        return [(name, config.get("name", "")) for name, config in session.execute(
            select(MucRoom.name, MucRoom.config).order_by(MucRoom.name))
                if config.get("public", True)]


def owned(db: Database, jid: str) -> set[str]:
    """The names of the stored rooms ``jid`` (a bare JID) owns."""
    with db.read() as session:
        return set(session.scalars(select(MucRoom.name).join(MucAffiliation, MucAffiliation.room_id == MucRoom.id)
                                   .where(MucAffiliation.jid == jid, MucAffiliation.affiliation == "owner")))
