"""Account repository: create (one, or many at once), delete, list, change password, load
credentials."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..credentials import Credentials, ScramKeys
from .database import Database
from .models import Account


class AccountExists(Exception):
    """An account of that name already exists."""


class NoSuchAccount(Exception):
    """No account of that name exists."""


def lookup(session, name: str, what=Account.id):
    """``what`` (a column of, or the whole, :class:`Account`) of account ``name`` in ``session``,
    for a change that needs the account; raises NoSuchAccount when there is none."""
    found = session.scalar(select(what).where(Account.name == name))
    if found is None:
        raise NoSuchAccount(name)
    return found


def _columns(creds: Credentials) -> dict:
    """The accounts table's columns holding ``creds``."""
    return {"scram_salt": creds.salt, "scram_iterations": creds.iterations,
            "scram_sha1_stored_key": creds.sha1.stored_key, "scram_sha1_server_key": creds.sha1.server_key,
            "scram_sha256_stored_key": creds.sha256.stored_key,
            "scram_sha256_server_key": creds.sha256.server_key, "digest_realm": creds.realm,
            "digest_ha1_md5": creds.ha1_md5, "digest_ha1_sha256": creds.ha1_sha256}


def _apply(account: Account, creds: Credentials) -> None:
    for column, value in _columns(creds).items():
        setattr(account, column, value)


def create(db: Database, name: str, creds: Credentials) -> None:
    account = Account(name=name)
    _apply(account, creds)
    try:
        with db.write() as session:
            if session.scalar(select(Account.id).where(Account.name == name)) is not None:
                raise AccountExists(name)
            session.add(account)
    except IntegrityError as exc:  # a concurrent create of the same name
        raise AccountExists(name) from exc


#: Names per ``IN (…)`` query: below every backend's limit on bound parameters.
BATCH = 500


def _existing(conn, names: Sequence[str]) -> set[str]:
    found = set()
    for start in range(0, len(names), BATCH):
        found.update(conn.scalars(select(Account.name).where(Account.name.in_(names[start:start + BATCH]))))
    return found


def existing(db: Database, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are accounts."""
    with db.read_connection() as conn:
        return _existing(conn, list(names))


def create_many(db: Database, accounts: Sequence[tuple[str, Credentials]],
                before_commit: Callable[[Connection, list[str]], None] | None = None) -> set[str]:
    """Create ``accounts`` (name, credentials) in one transaction: all of them, or none when
    anything fails. Names that exist (also those another process created since the caller
    looked) are left alone and returned. ``before_commit(conn, created names)`` runs inside the
    transaction, last (PostgreSQL NOTIFYs there are sent by the commit, and only by it)."""
    names = [name for name, _ in accounts]
    for attempt in (1, 2):
        try:
            with db.write_connection() as conn:
                found = _existing(conn, names)
                rows = [{"name": name, **_columns(creds)} for name, creds in accounts if name not in found]
                if rows:
                    conn.execute(insert(Account), rows)
                if before_commit:
                    before_commit(conn, [row["name"] for row in rows])
            return found
        except IntegrityError:  # PostgreSQL: a name created concurrently; look again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def set_credentials(db: Database, name: str, creds: Credentials) -> None:
    with db.write() as session:
        _apply(lookup(session, name, Account), creds)


def remove(db: Database, name: str) -> None:
    with db.write() as session:
        if session.execute(delete(Account).where(Account.name == name)).rowcount == 0:
            raise NoSuchAccount(name)


def exists(db: Database, name: str) -> bool:
    with db.read() as session:
        return session.scalar(select(Account.id).where(Account.name == name)) is not None


def names(db: Database) -> list[str]:
    with db.read() as session:
        return list(session.scalars(select(Account.name).order_by(Account.name)))


def secrets_kept(db: Database) -> list[tuple[str, bool, bool]]:
    """(name, whether a digest HA1 is stored, whether SCRAM keys of both hashes are), by name:
    an account imported from another server's keys has neither until a password is set."""
    query = select(Account.name, Account.digest_ha1_md5 != "",
                   (Account.scram_sha1_stored_key != b"") & (Account.scram_sha256_stored_key != b"")
                   ).order_by(Account.name)
    with db.read_connection() as conn:
        return [(name, bool(digest), bool(both)) for name, digest, both in conn.execute(query)]


def every_credentials(db: Database) -> Iterator[tuple[str, Credentials]]:
    """Every account's name and stored secrets, by name (``user export``)."""
    with db.read_connection() as conn:
        every = select(*_CREDENTIALS.selected_columns, Account.name).order_by(Account.name)
        for a in conn.execute(every):
            yield a.name, _credentials(a)


#: Built once: a statement object made per call costs more than the query (SIP and XMPP logins).
_CREDENTIALS = select(Account.scram_salt, Account.scram_iterations, Account.scram_sha1_stored_key,
                      Account.scram_sha1_server_key, Account.scram_sha256_stored_key,
                      Account.scram_sha256_server_key, Account.digest_realm, Account.digest_ha1_md5,
                      Account.digest_ha1_sha256).where(Account.name == bindparam("name"))


def _credentials(a) -> Credentials:
    return Credentials(a.scram_salt, a.scram_iterations,
                       ScramKeys(a.scram_sha1_stored_key, a.scram_sha1_server_key),
                       ScramKeys(a.scram_sha256_stored_key, a.scram_sha256_server_key),
                       a.digest_realm, a.digest_ha1_md5, a.digest_ha1_sha256)


def credentials(db: Database, name: str) -> Credentials | None:
    """The stored secrets of ``name`` (for SASL, SIP digest, HTTP auth), or None. Read each time:
    a password changed by the CLI in another process counts at the next login."""
    with db.read_connection() as conn:
        a = conn.execute(_CREDENTIALS, {"name": name}).first()
    return None if a is None else _credentials(a)
