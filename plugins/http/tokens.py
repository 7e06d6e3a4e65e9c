"""API token repository: bearer tokens (RFC 6750) of the HTTP API.

A token is 32 random bytes, URL-safe base64 (43 characters), shown once at creation; only its
SHA-256 digest is stored, so a leaked database gives no usable token. Tokens go with their
account (``ON DELETE CASCADE``). The ``api_tokens`` table belongs to the HTTP plugin: its model is
here and its revisions are the plugin's own Alembic branch (``plugins/http/migrations``, label
``http``).
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String, bindparam, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from convergence.store import Database
from convergence.store.accounts import lookup
from convergence.store.models import Account, Base, utcnow


class ApiToken(Base):
    """A bearer token for the HTTP API (RFC 6750): only its SHA-256 is kept, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)



@dataclass(frozen=True)
class TokenInfo:
    """What ``convergence token list`` shows: never the token itself."""
    id: int
    name: str
    created_at: datetime


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create(db: Database, account: str, name: str = "") -> tuple[int, str]:
    """A new token for ``account`` labelled ``name``: (its id, the token)."""
    token = secrets.token_urlsafe(32)
    with db.write() as session:
        account_id = lookup(session, account)
        row = ApiToken(account_id=account_id, name=name, digest=digest(token))
        session.add(row)
        session.flush()
        return row.id, token


#: Built once: every API request with a bearer token runs it.
_OWNER = (select(Account.name).join(ApiToken, ApiToken.account_id == Account.id)
          .where(ApiToken.digest == bindparam("digest")))


def owner(db: Database, token: str) -> str | None:
    """The account name ``token`` authenticates, or None."""
    with db.read_connection() as conn:
        return conn.execute(_OWNER, {"digest": digest(token)}).scalar()


def tokens(db: Database, account: str) -> list[TokenInfo]:
    """The tokens of ``account``, oldest first."""
    with db.read() as session:
        account_id = lookup(session, account)
        rows = session.execute(select(ApiToken.id, ApiToken.name, ApiToken.created_at)
                               .where(ApiToken.account_id == account_id).order_by(ApiToken.id))
        return [TokenInfo(*row) for row in rows]


def revoke(db: Database, token_id: int) -> bool:
    """Delete the token ``token_id``; False when there is none."""
    with db.write() as session:
        return session.execute(delete(ApiToken).where(ApiToken.id == token_id)).rowcount > 0
