"""Roster items and versions (RFC 6121 §2)."""
import pytest

from convergence.store import roster
from convergence.store.accounts import NoSuchAccount
from convergence.store.roster import Item


def test_items_and_versions(core):
    core.add_account("juliet", "pw")
    assert roster.items(core.db, "juliet") == ([], 0)
    v1 = roster.save(core.db, "juliet", Item("romeo@example.net", "Romeo", groups=("Friends",)))
    item, v2 = roster.update(core.db, "juliet", "romeo@example.net", subscription="to", ask=False)
    assert (v1, v2) == (1, 2)
    assert item == Item("romeo@example.net", "Romeo", "to", False, False, ("Friends",))
    assert roster.items(core.db, "juliet") == ([item], 2)
    assert roster.remove(core.db, "juliet", "romeo@example.net") == 3
    assert roster.remove(core.db, "juliet", "romeo@example.net") is None
    assert roster.items(core.db, "juliet") == ([], 3)


def test_update_creates_with_defaults(core):
    core.add_account("juliet", "pw")
    item, _ = roster.update(core.db, "juliet", "nurse@example.org", ask=True)
    assert item == Item("nurse@example.org", ask=True)


def test_bad_subscription_and_unknown_account(core):
    core.add_account("juliet", "pw")
    with pytest.raises(ValueError):
        roster.save(core.db, "juliet", Item("x@y", subscription="maybe"))
    with pytest.raises(NoSuchAccount):
        roster.items(core.db, "nobody")
