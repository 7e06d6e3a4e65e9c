"""Offline message repository (XEP-0160): store in arrival order, pop in that order."""
from __future__ import annotations

from sqlalchemy import bindparam, delete, func, select

from ..addresses import Address
from ..message import Message
from .accounts import lookup
from .database import Database
from .models import Account, OfflineMessage


def store(db: Database, account: str, message: Message, limit: int) -> bool:
    """Keep ``message`` for ``account``; False when ``limit`` messages are already waiting."""
    return store_many(db, account, [message], limit) == 1


def store_many(db: Database, account: str, messages: list[Message], limit: int) -> int:
    """Keep ``messages`` for ``account`` in one transaction, oldest first, as many as fit under
    ``limit``; returns how many were kept (an endpoint giving back a long queue at shutdown must
    not pay one transaction per message)."""
    with db.write() as session:
        account_id = lookup(session, account)
        waiting = session.scalar(select(func.count()).where(OfflineMessage.account_id == account_id))
        kept = messages[:max(0, limit - waiting)]
        session.add_all([OfflineMessage(account_id=account_id, message_id=m.id, sender=m.sender.jid,
                                        recipient=m.recipient.jid, type=m.type, body=m.body,
                                        subject=m.subject, thread=m.thread) for m in kept])
        return len(kept)


# Built once, selecting columns, run on a plain connection: no ORM session or objects (see roster.py).
_PENDING = (select(OfflineMessage.id, OfflineMessage.sender, OfflineMessage.recipient, OfflineMessage.body,
                   OfflineMessage.subject, OfflineMessage.thread, OfflineMessage.type,
                   OfflineMessage.message_id, OfflineMessage.stored_at)
            .join(Account, Account.id == OfflineMessage.account_id)
            .where(Account.name == bindparam("name")).order_by(OfflineMessage.id))


def pending(db: Database, account: str, limit: int | None = None) -> list[tuple[int, Message]]:
    """The messages kept for ``account`` as (row id, message), oldest first, stamped (XEP-0203);
    only the ``limit`` oldest if given (a page: the router delivers a backlog page by page)."""
    with db.read_connection() as conn:
        rows = conn.execute(_PENDING.limit(limit), {"name": account}).all()
    return [(r.id, Message(Address.parse(r.sender), Address.parse(r.recipient), r.body, r.subject,
                           r.thread, r.type, r.message_id, r.stored_at)) for r in rows]


def remove(db: Database, row_ids: list[int]) -> None:
    """Forget delivered messages (row ids from ``pending``)."""
    if row_ids:
        with db.write() as session:
            session.execute(delete(OfflineMessage).where(OfflineMessage.id.in_(row_ids)))


def count(db: Database, account: str) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(OfflineMessage)
                              .join(Account, Account.id == OfflineMessage.account_id)
                              .where(Account.name == account))


def total(db: Database) -> int:
    """Messages waiting for every account (the metrics' offline store size)."""
    with db.read_connection() as conn:
        return conn.execute(select(func.count()).select_from(OfflineMessage)).scalar_one()
