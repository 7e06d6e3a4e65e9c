"""vcard-temp repository (XEP-0054): one serialized ``<vCard/>`` per account.

The ``vcards`` table belongs to the XMPP plugin: its model is here and its revisions are the
plugin's own Alembic branch (``plugins/xmpp/migrations``, label ``xmpp``).
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Account, Base, utcnow


class VCard(Base):
    """An account's vcard-temp (XEP-0054), kept as the client sent it."""

    __tablename__ = "vcards"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    vcard: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)



def get(db: Database, account: str) -> str | None:
    """The stored vCard XML of ``account``, or None when it has none."""
    with db.read() as session:
        return session.scalar(select(VCard.vcard).join(Account, Account.id == VCard.account_id)
                              .where(Account.name == account))


def save(db: Database, account: str, vcard: str) -> None:
    """Replace ``account``'s vCard."""
    with db.write() as session:
        account_id = lookup(session, account)
        row = session.get(VCard, account_id)
        if row is None:
            session.add(VCard(account_id=account_id, vcard=vcard))
        else:
            row.vcard = vcard
