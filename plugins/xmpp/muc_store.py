"""Persistent rooms of Multi-User Chat (XEP-0045 §10.2 ``muc#roomconfig_persistentroom``) in SQL.

The tables belong to the XMPP plugin (revision ``xmpp_0003_muc`` of its Alembic branch ``xmpp``):
``muc_rooms`` (a room's configuration as JSON and its subject), ``muc_affiliations`` (owner,
admin, member, outcast by bare JID, §5.2) and ``muc_history`` (the room's recent groupchat
messages, §7.2.14, at most the room's ``history`` setting: older rows are deleted as new ones
come). Only persistent rooms are stored; a temporary room lives in memory and ends with its last
occupant. Deleting a room deletes what hangs off it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.models import Base, utcnow

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

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("muc_rooms.id", ondelete="CASCADE"), index=True)
    nick: Mapped[str] = mapped_column(String(1023))
    jid: Mapped[str] = mapped_column(String(3071))
    stamp: Mapped[datetime] = mapped_column(DateTime)
    body: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[str] = mapped_column(Text, default="")  # other payloads, serialized XML


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
        rows = session.execute(select(MucHistory.nick, MucHistory.jid, MucHistory.stamp, MucHistory.body,
                                      MucHistory.subject, MucHistory.extra)
                               .where(MucHistory.room_id == row.id)
                               .order_by(MucHistory.id.desc()).limit(history)).all()
        entries = [HistoryEntry(nick, jid, stamp, body, subject,
                                tuple(ET.fromstring(f"<x>{extra}</x>")) if extra else ())
                   for nick, jid, stamp, body, subject, extra in reversed(rows)]
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


def add_history(db: Database, name: str, entry: HistoryEntry, keep: int) -> None:
    """Keep ``entry``, and at most the ``keep`` newest entries of the room."""
    extra = "".join(ET.tostring(x, encoding="unicode") for x in entry.extra)
    with db.write() as session:
        room_id = _room_id(session, name)
        if room_id is None:
            return
        session.add(MucHistory(room_id=room_id, nick=entry.nick, jid=entry.jid, stamp=entry.stamp,
                               body=entry.body, subject=entry.subject, extra=extra))
        session.flush()
        oldest_kept = session.scalar(select(MucHistory.id).where(MucHistory.room_id == room_id)
                                     .order_by(MucHistory.id.desc()).offset(keep - 1).limit(1))
        if oldest_kept is not None:
            session.execute(delete(MucHistory).where(MucHistory.room_id == room_id,
                                                     MucHistory.id < oldest_kept))


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
