"""Roster items and versions (RFC 6121 §2)."""
import pytest

from convergence.credentials import derive
from convergence.store import accounts, roster
from convergence.store.accounts import NoSuchAccount
from convergence.store.database import Database
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


@pytest.fixture
def server_and_cli(tmp_path, database_url):
    """Two Database objects on one database, as the server and a CLI process have."""
    url = database_url or f"sqlite:///{tmp_path}/convergence.sqlite"
    server, cli = Database(url), Database(url)
    server.upgrade()
    yield server, cli
    cli.close()
    server.close()


def add_account(db, name):
    accounts.create(db, name, derive(name, "localhost", "pw", iterations=4096))


def test_initial_presence_reads_what_the_single_reads_do(core):  # RFC 6121 §4.2.2
    for name in ("juliet", "romeo", "nurse"):
        core.add_account(name, "pw")
    roster.save(core.db, "juliet", Item("romeo@localhost", "Romeo", "both", groups=("Friends", "Verona")))
    roster.save(core.db, "juliet", Item("nurse@localhost", subscription="to"))
    roster.save(core.db, "romeo", Item("juliet@localhost", subscription="both"))
    roster.save(core.db, "nurse", Item("juliet@localhost", subscription="from"))
    roster.add_request(core.db, "juliet", "tybalt@localhost", "<presence type='subscribe'/>")
    state = roster.initial_presence(core.db, "juliet", "juliet@localhost")
    assert (state.items, state.version) == roster.items(core.db, "juliet")
    assert state.version == 2 and [i.jid for i in state.items] == ["romeo@localhost", "nurse@localhost"]
    assert state.items[0].groups == ("Friends", "Verona")
    assert state.requests == roster.requests(core.db, "juliet") == [
        ("tybalt@localhost", "<presence type='subscribe'/>")]
    assert state.watchers == roster.watchers(core.db, "juliet@localhost") == ["romeo"]
    assert sorted(roster.shown_to(core.db, "juliet@localhost")) == ["nurse", "romeo"]  # she sees them
    assert roster.initial_presence(core.db, "juliet", "juliet@localhost", watchers=False).watchers is None
    with pytest.raises(NoSuchAccount):
        roster.initial_presence(core.db, "nobody", "nobody@localhost")


def test_reads_see_what_another_process_wrote(server_and_cli):
    """Nothing is remembered between reads: a change by the CLI shows at the next one."""
    server, cli = server_and_cli
    add_account(cli, "juliet")
    empty = roster.initial_presence(server, "juliet", "juliet@localhost")
    assert (empty.items, empty.version, empty.requests, empty.watchers) == ([], 0, [], [])
    add_account(cli, "romeo")
    roster.save(cli, "juliet", Item("romeo@localhost", subscription="to"))
    roster.save(cli, "romeo", Item("juliet@localhost", subscription="to"))
    roster.add_request(cli, "juliet", "romeo@localhost", "<presence/>")
    state = roster.initial_presence(server, "juliet", "juliet@localhost")
    assert (state.items, state.version) == ([Item("romeo@localhost", subscription="to")], 1)
    assert (state.requests, state.watchers) == ([("romeo@localhost", "<presence/>")], ["romeo"])
    accounts.remove(cli, "juliet")
    with pytest.raises(NoSuchAccount):
        roster.items(server, "juliet")
