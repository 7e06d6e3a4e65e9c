"""The block lists of XEP-0191 in SQL: table ``blocked_jids`` (revision ``xmpp_0004_blocking``).

One row per (account, blocked JID); the JID is stored as the normalized string of what the client
sent (a full JID, a bare JID, a domain or a domain with a resource, XEP-0191 §3.6). The XMPP
plugin's per-core ``blocking.BlockLists`` caches each account's list and is the only writer.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Account, Base, utcnow

#: characters of the longest JID (RFC 7622 §3.1: 1023 bytes per part, '@' and '/')
MAX_JID = 3071
#: bytes of a JID that may be blocked: a key PostgreSQL's B-tree index holds (at most 2704 bytes)
MAX_JID_BYTES = 2048


class BlockedJid(Base):
    """One JID an account blocks (XEP-0191 §3.3)."""

    __tablename__ = "blocked_jids"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    jid: Mapped[str] = mapped_column(String(MAX_JID), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def load(db: Database, account: str) -> list[str]:
    """The JIDs ``account`` blocks, oldest first."""
    return load_many(db, [account]).get(account, [])


def load_many(db: Database, accounts: list[str]) -> dict[str, list[str]]:
    """The JIDs each of ``accounts`` blocks, oldest first, in one query (an account that blocks
    nothing is left out)."""
    lists: dict[str, list[str]] = {}
    with db.read() as session:
        for name, jid in session.execute(
                select(Account.name, BlockedJid.jid).join(Account, Account.id == BlockedJid.account_id)
                .where(Account.name.in_(accounts)).order_by(BlockedJid.created_at, BlockedJid.jid)):
            lists.setdefault(name, []).append(jid)
    return lists


def add(db: Database, account: str, jids: list[str], max_items: int) -> bool:
    """Block ``jids`` (those already blocked stay as they are); False, and nothing stored, when
    the list would then hold more than ``max_items`` JIDs."""
    with db.write() as session:
        account_id = lookup(session, account)
        present = set(session.scalars(select(BlockedJid.jid).where(
            BlockedJid.account_id == account_id, BlockedJid.jid.in_(jids))))
        new = [j for j in dict.fromkeys(jids) if j not in present]
        count = session.scalar(select(func.count()).select_from(BlockedJid)
                               .where(BlockedJid.account_id == account_id))
        if count + len(new) > max_items:
            return False
        session.add_all(BlockedJid(account_id=account_id, jid=j) for j in new)
        return True


def remove(db: Database, account: str, jids: list[str] | None) -> None:
    """Unblock ``jids``, or every JID when None (XEP-0191 §3.4)."""
    with db.write() as session:
        account_id = lookup(session, account)
        where = [BlockedJid.account_id == account_id]
        if jids is not None:
            where.append(BlockedJid.jid.in_(jids))
        session.execute(delete(BlockedJid).where(*where))
