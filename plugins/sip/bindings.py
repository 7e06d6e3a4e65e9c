"""SIP binding repository (RFC 3261 §10.3), shaped after Kamailio usrloc's ``location`` table.

The ``sip_bindings`` table belongs to the SIP plugin: its model is here and its revisions are the
plugin's own Alembic branch (``plugins/sip/migrations``, label ``sip``).

Expiry is an absolute UTC time, so bindings survive a restart and expire on time whatever the
uptime; the registrar asks for ``expired(now)`` and removes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint,
                        bindparam, delete, select, update)
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Account, Base, utcnow


class SipBinding(Base):
    """One registered contact of an AOR (RFC 3261 §10.3)."""

    __tablename__ = "sip_bindings"
    __table_args__ = (UniqueConstraint("account_id", "contact"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    contact: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    q: Mapped[float | None] = mapped_column(Float)
    call_id: Mapped[str] = mapped_column(String(255))
    cseq: Mapped[int] = mapped_column(Integer)
    received: Mapped[str | None] = mapped_column(String(255))  # transport:host:port it came from
    path: Mapped[str | None] = mapped_column(Text)
    instance: Mapped[str | None] = mapped_column(String(255))  # RFC 5626 +sip.instance
    user_agent: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)



@dataclass(frozen=True)
class Binding:
    account: str
    contact: str
    expires_at: datetime
    q: float | None
    call_id: str
    cseq: int
    received: str | None = None
    path: str | None = None
    instance: str | None = None
    user_agent: str | None = None


def _binding(row: SipBinding, account: str) -> Binding:
    return Binding(account, row.contact, row.expires_at, row.q, row.call_id, row.cseq, row.received,
                   row.path, row.instance, row.user_agent)


def save(db: Database, binding: Binding) -> None:
    """Add or refresh the binding of ``binding.contact`` for its account."""
    with db.write() as session:
        account_id = lookup(session, binding.account)
        row = session.scalar(select(SipBinding).where(SipBinding.account_id == account_id,
                                                      SipBinding.contact == binding.contact))
        if row is None:
            row = SipBinding(account_id=account_id, contact=binding.contact)
            session.add(row)
        for field in _FIELDS:
            setattr(row, field, getattr(binding, field))


def refresh(db: Database, binding: Binding) -> bool:
    """Rewrite an existing binding (a re-REGISTER) in one UPDATE, without reading it first;
    False when there is no such binding (then ``save`` it)."""
    with db.write_connection() as conn:
        return conn.execute(_UPDATE, _parameters(binding)).rowcount == 1


def refresh_many(db: Database, rows: list[Binding]) -> None:
    """``refresh`` bindings known to exist, all in one transaction (a registrar committing a
    batch of re-REGISTERs at once); a row that vanished meanwhile is skipped. A binding refreshed
    twice in the batch is written once, as it was last; the rows are written in (account,
    contact) order, so that processes sharing PostgreSQL (workers, cluster nodes) lock them in
    one order and never deadlock on a phone that re-registers through both."""
    last = {(row.account, row.contact): row for row in rows}
    with db.write_connection() as conn:
        conn.execute(_UPDATE, [_parameters(last[key]) for key in sorted(last)])


def _parameters(binding: Binding) -> dict:
    return {"b_account": binding.account, "b_contact": binding.contact, "updated_at": utcnow(),
            **{field: getattr(binding, field) for field in _FIELDS}}


_FIELDS = ("expires_at", "q", "call_id", "cseq", "received", "path", "instance", "user_agent")
_bindings = SipBinding.__table__
_UPDATE = (update(_bindings)  # a Core statement: compiled once, no ORM bookkeeping per call
           .where(_bindings.c.account_id == select(Account.id)
                  .where(Account.name == bindparam("b_account")).scalar_subquery(),
                  _bindings.c.contact == bindparam("b_contact")))


def remove(db: Database, account: str, contact: str | None = None) -> None:
    """Remove one contact of ``account``, or all of them (``Contact: *``, RFC 3261 §10.3 step 6)."""
    with db.write() as session:
        ids = select(Account.id).where(Account.name == account).scalar_subquery()
        query = delete(SipBinding).where(SipBinding.account_id == ids)
        if contact is not None:
            query = query.where(SipBinding.contact == contact)
        session.execute(query)


def _select(session, *conditions):
    rows = session.execute(select(SipBinding, Account.name).join(Account)
                           .where(*conditions).order_by(SipBinding.id))
    return [_binding(row, name) for row, name in rows]


def current(db: Database, now: datetime, account: str | None = None) -> list[Binding]:
    """Bindings not yet expired at ``now`` (of ``account``, or all: a restart reloads them)."""
    with db.read() as session:
        conditions = [SipBinding.expires_at > now]
        if account is not None:
            conditions.append(Account.name == account)
        return _select(session, *conditions)


def pop_expired(db: Database, now: datetime) -> list[Binding]:
    """Remove and return the bindings that expired at or before ``now``."""
    with db.write() as session:
        gone = _select(session, SipBinding.expires_at <= now)
        session.execute(delete(SipBinding).where(SipBinding.expires_at <= now))
    return gone
