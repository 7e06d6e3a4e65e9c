"""SQLAlchemy 2 models of the core's tables: the schema Alembic (``migrations/``) owns.

Times are naive UTC. Shapes follow the peers: roster items after RFC 6121 §2.1.2, offline messages
after XEP-0160. A plugin's tables are declared on the same :class:`Base` in the plugin and
created by the plugin's own Alembic branch (``add_migrations``): SIP bindings in
``plugins/sip/bindings.py``, vCards in ``plugins/xmpp/vcard_store.py``, API tokens in
``plugins/http/tokens.py``.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Account(Base):
    """A local account ``name@[server] domain``; only password-derived secrets are kept."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(1023), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    scram_salt: Mapped[bytes] = mapped_column(LargeBinary(64))
    scram_iterations: Mapped[int] = mapped_column(Integer)
    scram_sha1_stored_key: Mapped[bytes] = mapped_column(LargeBinary(20))
    scram_sha1_server_key: Mapped[bytes] = mapped_column(LargeBinary(20))
    scram_sha256_stored_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    scram_sha256_server_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    digest_realm: Mapped[str] = mapped_column(String(255))
    digest_ha1_md5: Mapped[str] = mapped_column(String(32))
    digest_ha1_sha256: Mapped[str] = mapped_column(String(64))
    roster_version: Mapped[int] = mapped_column(Integer, default=0)


class RosterItem(Base):
    """One contact on an account's roster (RFC 6121 §2.1.2)."""

    __tablename__ = "roster_items"
    __table_args__ = (UniqueConstraint("account_id", "jid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    jid: Mapped[str] = mapped_column(String(3071))
    name: Mapped[str | None] = mapped_column(String(1023))
    subscription: Mapped[str] = mapped_column(String(8), default="none")  # none|to|from|both
    ask: Mapped[bool] = mapped_column(Boolean, default=False)  # outbound subscribe pending
    approved: Mapped[bool] = mapped_column(Boolean, default=False)  # pre-approval, §3.4
    groups: Mapped[list] = mapped_column(JSON, default=list)


class OfflineMessage(Base):
    """A message accepted while its recipient had no live endpoint (XEP-0160); id gives the order."""

    __tablename__ = "offline_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    stored_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    message_id: Mapped[str] = mapped_column(String(255))
    sender: Mapped[str] = mapped_column(String(3071))
    recipient: Mapped[str] = mapped_column(String(3071))
    type: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    thread: Mapped[str | None] = mapped_column(String(255))


class SubscriptionRequest(Base):
    """An inbound presence subscription request not yet answered (RFC 6121 §3.1.3 "Pending In"):
    the complete stanza, redelivered at the account's next initial presence."""

    __tablename__ = "subscription_requests"
    __table_args__ = (UniqueConstraint("account_id", "jid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    jid: Mapped[str] = mapped_column(String(3071))  # bare JID of the requester
    stanza: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
