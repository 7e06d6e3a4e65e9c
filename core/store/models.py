"""SQLAlchemy 2 models: the schema Alembic (``migrations/``) owns.

Times are naive UTC. Shapes follow the peers: SIP bindings after Kamailio usrloc's ``location``
table, roster items after RFC 6121 §2.1.2, offline messages after XEP-0160.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, String,
                        Text, UniqueConstraint)
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


class VCard(Base):
    """An account's vcard-temp (XEP-0054), kept as the client sent it."""

    __tablename__ = "vcards"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"),
                                            primary_key=True)
    vcard: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A bearer token for the HTTP API (RFC 6750): only its SHA-256 is kept, never the token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
