"""SIP bindings persist with absolute expiry times (RFC 3261 §10.3)."""
from datetime import datetime, timedelta

import pytest

from convergence.plugins.sip import bindings
from convergence.store.accounts import NoSuchAccount
from convergence.plugins.sip.bindings import Binding

T0 = datetime(2026, 1, 1, 12, 0, 0)


def binding(contact, seconds, account="alice", cseq=1):
    return Binding(account, contact, T0 + timedelta(seconds=seconds), 0.5, "call-1", cseq,
                   "udp:127.0.0.1:5070", None, None, "test-ua")


def test_save_refresh_and_list(core):
    core.add_account("alice", "pw")
    bindings.save(core.db, binding("sip:a@127.0.0.1:5070", 60))
    bindings.save(core.db, binding("sip:a@127.0.0.1:5071", 120))
    bindings.save(core.db, binding("sip:a@127.0.0.1:5070", 300, cseq=2))  # refresh, not a copy
    found = bindings.current(core.db, T0, "alice")
    assert [(b.contact, b.cseq) for b in found] == [("sip:a@127.0.0.1:5070", 2), ("sip:a@127.0.0.1:5071", 1)]
    assert found[0] == binding("sip:a@127.0.0.1:5070", 300, cseq=2)


def test_a_batch_of_refreshes_writes_each_binding_once_as_last_refreshed(core):
    """``refresh_many`` (the registrar's batch of re-REGISTERs, which it writes once each and in
    (account, contact) order, for lock order between processes): a binding twice in one batch
    ends as its last refresh, whatever the batch's order."""
    core.add_account("alice", "pw")
    core.add_account("bob", "pw")
    for row in (binding("sip:a@h", 60), binding("sip:b@h", 60), binding("sip:bob@h", 60, account="bob")):
        bindings.save(core.db, row)
    bindings.refresh_many(core.db, [binding("sip:bob@h", 90, account="bob", cseq=2), binding("sip:b@h", 90, cseq=2),
                                    binding("sip:a@h", 90, cseq=2), binding("sip:b@h", 120, cseq=3)])
    assert [(b.account, b.contact, b.cseq, b.expires_at) for b in bindings.current(core.db, T0)] == [
        ("alice", "sip:a@h", 2, T0 + timedelta(seconds=90)), ("alice", "sip:b@h", 3, T0 + timedelta(seconds=120)),
        ("bob", "sip:bob@h", 2, T0 + timedelta(seconds=90))]


def test_expiry_is_absolute(core):
    core.add_account("alice", "pw")
    bindings.save(core.db, binding("sip:short@h", 60))
    bindings.save(core.db, binding("sip:long@h", 3600))
    later = T0 + timedelta(seconds=61)
    assert [b.contact for b in bindings.current(core.db, later)] == ["sip:long@h"]
    assert [b.contact for b in bindings.pop_expired(core.db, later)] == ["sip:short@h"]
    assert bindings.pop_expired(core.db, later) == []


def test_remove_one_or_all(core):
    core.add_account("alice", "pw")
    core.add_account("bob", "pw")
    for contact in ("sip:1@h", "sip:2@h"):
        bindings.save(core.db, binding(contact, 60))
    bindings.save(core.db, binding("sip:bob@h", 60, account="bob"))
    bindings.remove(core.db, "alice", "sip:1@h")
    assert [b.contact for b in bindings.current(core.db, T0, "alice")] == ["sip:2@h"]
    bindings.remove(core.db, "alice")  # Contact: *
    assert [b.account for b in bindings.current(core.db, T0)] == ["bob"]


def test_unknown_account(core):
    with pytest.raises(NoSuchAccount):
        bindings.save(core.db, binding("sip:x@h", 60, account="nobody"))
