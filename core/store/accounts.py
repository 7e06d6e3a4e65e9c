"""Account repository: create, delete, list, change password, load credentials."""
from __future__ import annotations

from sqlalchemy import bindparam, delete, select
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


def _apply(account: Account, creds: Credentials) -> None:
    account.scram_salt = creds.salt
    account.scram_iterations = creds.iterations
    account.scram_sha1_stored_key = creds.sha1.stored_key
    account.scram_sha1_server_key = creds.sha1.server_key
    account.scram_sha256_stored_key = creds.sha256.stored_key
    account.scram_sha256_server_key = creds.sha256.server_key
    account.digest_realm = creds.realm
    account.digest_ha1_md5 = creds.ha1_md5
    account.digest_ha1_sha256 = creds.ha1_sha256


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


#: Built once: a statement object made per call costs more than the query (SIP and XMPP logins).
_CREDENTIALS = select(Account.scram_salt, Account.scram_iterations, Account.scram_sha1_stored_key,
                      Account.scram_sha1_server_key, Account.scram_sha256_stored_key,
                      Account.scram_sha256_server_key, Account.digest_realm, Account.digest_ha1_md5,
                      Account.digest_ha1_sha256).where(Account.name == bindparam("name"))


def credentials(db: Database, name: str) -> Credentials | None:
    """The stored secrets of ``name`` (for SASL, SIP digest, HTTP auth), or None. Read each time:
    a password changed by the CLI in another process counts at the next login."""
    with db.read_connection() as conn:
        a = conn.execute(_CREDENTIALS, {"name": name}).first()
    if a is None:
        return None
    return Credentials(a.scram_salt, a.scram_iterations,
                       ScramKeys(a.scram_sha1_stored_key, a.scram_sha1_server_key),
                       ScramKeys(a.scram_sha256_stored_key, a.scram_sha256_server_key),
                       a.digest_realm, a.digest_ha1_md5, a.digest_ha1_sha256)
