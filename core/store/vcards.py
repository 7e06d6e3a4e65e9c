"""vcard-temp repository (XEP-0054): one serialized ``<vCard/>`` per account."""
from __future__ import annotations

from sqlalchemy import select

from .accounts import lookup
from .database import Database
from .models import Account, VCard


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
