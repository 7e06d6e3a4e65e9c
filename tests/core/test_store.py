"""Accounts in the store: secrets only, never the password; the write path's rules."""
import pytest
from sqlalchemy import select

from convergence.credentials import PasswordError
from convergence.store import accounts
from convergence.store.accounts import AccountExists, NoSuchAccount
from convergence.store.models import Account


def test_account_lifecycle(core):
    core.add_account("Bob", "first")
    assert core.check_password("bob", "first") and core.check_password("BOB", "first")
    assert not core.check_password("no body", "first")
    core.set_password("bob", "second")
    assert not core.check_password("bob", "first") and core.check_password("bob", "second")
    assert accounts.names(core.db) == ["bob"]
    core.delete_account("bob")
    assert accounts.names(core.db) == [] and not core.check_password("bob", "second")


def test_password_is_never_stored(core):
    core.add_account("bob", "correct horse battery")
    with core.db.read() as session:
        row = session.scalar(select(Account))
        values = [getattr(row, c.key) for c in Account.__table__.columns]
    assert not any(b"correct horse" in (v if isinstance(v, bytes) else str(v).encode()) for v in values)
    assert row.digest_realm == "localhost" and len(row.digest_ha1_sha256) == 64


def test_duplicate_and_missing_accounts(core):
    core.add_account("bob", "pw")
    with pytest.raises(AccountExists):
        core.add_account("BOB", "pw")  # the same localpart after case mapping
    with pytest.raises(NoSuchAccount):
        core.delete_account("carol")
    with pytest.raises(PasswordError):
        core.add_account("carol", "")
    assert accounts.names(core.db) == ["bob"]


def test_failed_write_rolls_back(core):
    with pytest.raises(RuntimeError):
        with core.db.write() as session:
            session.add(Account(name="ghost", scram_salt=b"", scram_iterations=1,
                                scram_sha1_stored_key=b"", scram_sha1_server_key=b"",
                                scram_sha256_stored_key=b"", scram_sha256_server_key=b"",
                                digest_realm="x", digest_ha1_md5="", digest_ha1_sha256=""))
            session.flush()
            raise RuntimeError("boom")
    assert accounts.names(core.db) == []


def test_deleting_an_account_deletes_its_offline_messages(core):
    from sqlalchemy import func

    from convergence import Message
    from convergence.store.models import OfflineMessage
    bob = core.add_account("bob", "pw")
    core.send(Message(core.address("x"), bob, "hi"))
    core.delete_account("bob")
    with core.db.read() as session:
        assert session.scalar(select(func.count()).select_from(OfflineMessage)) == 0
