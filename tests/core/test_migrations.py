"""Alembic owns the schema: the migrations must build exactly what the models describe, and a
database made by an earlier release upgrades with no row lost."""
from datetime import datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from convergence.config import load
from convergence.core import Core
from convergence.plugins.http import tokens
from convergence.plugins.sip import bindings
from convergence.plugins.xmpp import vcard_store
from convergence.store.models import Base
from convergence.testing import open_test_database

PROTOCOL_TABLES = {"sip_bindings": "sip", "vcards": "xmpp", "api_tokens": "http"}


def schema_diff(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # plugins' own tables that no loaded module declares (the hello plugin's) are not compared
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name not in Base.metadata.tables)]


def test_migrations_match_models(core):
    assert schema_diff(core.db) == []


def test_upgrade_is_idempotent_and_current_is_head(core):
    core.db.upgrade()
    current, heads, up_to_date = core.db.current()
    assert up_to_date and {"0004", "sip_0001", "xmpp_0006_muc_archive", "http_0002"} <= heads


@pytest.fixture
def old_database(request, tmp_path):
    """A core (not migrated) on a database at revision 0003, the schema release 0.1.0 made, where
    the core's revisions created sip_bindings, vcards and api_tokens."""
    made = []

    def make(disabled_plugins=()):
        db, drop = open_test_database(request.config.getoption("convergence_database"))
        config = load(None, {"server": {"data_dir": str(tmp_path),
                                        "disabled_plugins": list(disabled_plugins)}})
        core = Core.create(config, db=db)
        made.append(drop)
        db.upgrade("0003")
        assert set(PROTOCOL_TABLES) <= set(inspect(db.engine).get_table_names())
        return core

    yield make
    for drop in made:
        drop()


EXPIRES = datetime(2100, 1, 1)


def fill(db):
    """Rows as release 0.1.0 wrote them: an account with a binding, a vCard and a token."""
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO accounts (id, name, created_at, scram_salt, scram_iterations, "
            "scram_sha1_stored_key, scram_sha1_server_key, scram_sha256_stored_key, "
            "scram_sha256_server_key, digest_realm, digest_ha1_md5, digest_ha1_sha256, roster_version) "
            "VALUES (7, 'alice', :now, :b, 4096, :b, :b, :b, :b, 'example.org', '', '', 0)"),
            {"now": datetime(2026, 1, 1), "b": b"\x01" * 16})
        conn.execute(text(
            "INSERT INTO sip_bindings (account_id, contact, expires_at, q, call_id, cseq, received, "
            "path, instance, user_agent, updated_at) VALUES (7, 'sip:alice@192.0.2.1:5060', :exp, "
            "0.5, 'call-1', 3, 'udp:192.0.2.1:5060', NULL, '<urn:uuid:1>', 'phone/1', :now)"),
            {"exp": EXPIRES, "now": datetime(2026, 1, 1)})
        conn.execute(text("INSERT INTO vcards (account_id, vcard, updated_at) VALUES (7, :v, :now)"),
                     {"v": "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>", "now": datetime(2026, 1, 1)})
        conn.execute(text("INSERT INTO api_tokens (account_id, name, digest, created_at) "
                          "VALUES (7, 'laptop', :d, :now)"),
                     {"d": tokens.digest("the-token"), "now": datetime(2026, 1, 1)})


def test_rows_made_by_the_previous_release_survive_the_move_to_the_plugins(old_database):
    core = old_database()
    fill(core.db)
    core.db.upgrade()
    [binding] = bindings.current(core.db, EXPIRES - timedelta(days=1))
    assert (binding.account, binding.contact, binding.q, binding.call_id, binding.cseq,
            binding.received, binding.instance, binding.user_agent) == (
        "alice", "sip:alice@192.0.2.1:5060", 0.5, "call-1", 3, "udp:192.0.2.1:5060", "<urn:uuid:1>",
        "phone/1")
    assert vcard_store.get(core.db, "alice") == "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>"
    assert tokens.owner(core.db, "the-token") == "alice"
    assert [t.name for t in tokens.tokens(core.db, "alice")] == ["laptop"]
    assert schema_diff(core.db) == []  # the adopted tables have exactly the plugins' shape
    current, heads, up_to_date = core.db.current()
    assert up_to_date and {"sip_0001", "xmpp_0006_muc_archive", "http_0002"} <= current


def test_a_disabled_plugin_has_no_table_and_its_rows_wait_for_it(old_database):
    empty = old_database(disabled_plugins=["sip"])
    empty.db.upgrade()  # the empty tables of 0.1.0: dropped, and only enabled plugins recreate theirs
    tables = set(inspect(empty.db.engine).get_table_names())
    assert "sip_bindings" not in tables and {"vcards", "api_tokens"} <= tables
    kept = old_database(disabled_plugins=["sip"])
    fill(kept.db)
    kept.db.upgrade()  # a table with rows stays, whether or not its plugin runs today
    with kept.db.engine.connect() as conn:
        assert conn.execute(text("SELECT contact FROM sip_bindings")).scalars().all() == [
            "sip:alice@192.0.2.1:5060"]


def test_a_downgrade_to_the_previous_release_keeps_every_row(old_database):
    from alembic import command

    core = old_database()
    fill(core.db)
    core.db.upgrade()
    config = core.db._alembic()
    with core.db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with core.db.engine.connect() as conn:
        versions = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        assert "0003" in versions and not versions & {"0004", "sip_0001", "xmpp_0001", "http_0001", "http_0002"}
        assert conn.execute(text("SELECT contact FROM sip_bindings")).scalars().all() == [
            "sip:alice@192.0.2.1:5060"]
        assert conn.execute(text("SELECT count(*) FROM vcards")).scalar() == 1
        assert conn.execute(text("SELECT name FROM api_tokens")).scalars().all() == ["laptop"]
