"""Operational database conditions never end a command with a traceback (issue 17): concurrent
commands on a fresh database wait for each other (the migration lock, SQLite's busy timeout); a
busy, read-only, missing, unreachable or newer database is one exit-2 line naming it;
``CONVERGENCE_DEBUG=1`` shows the traceback. Run with ``--convergence-database`` too: the
concurrent commands then migrate a fresh PostgreSQL schema under the advisory lock."""
import sqlite3
import time

import pytest
from sqlalchemy import text

from convergence.store import Database
from convergence.testing import free_port

from . import write_config


def one_line_exit_2(result, *needles):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("round_", [1, 2])
def test_four_concurrent_commands_on_a_fresh_database_all_succeed(tmp_path, database_url, round_, run_cli, start_cli):
    config = write_config(tmp_path / "c.toml", database_url)
    (tmp_path / "more.csv").write_text("carol,c-pw\ndave,d-pw\nerin,e-pw\n")
    commands = [("user", "add", "alice", "-p", "a-pw"), ("user", "add", "bob", "-p", "b-pw"),
                ("user", "import", tmp_path / "more.csv"), ("user", "list")]
    running = [start_cli(config, *args) for args in commands]  # all at once, before any migrated
    for args, process in zip(commands, running):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and "Traceback" not in err, (args, out, err)
    listed = run_cli(config, "user", "list").stdout.split()
    assert listed == [f"{n}@example.org" for n in ("alice", "bob", "carol", "dave", "erin")]


def test_a_busy_sqlite_database_is_waited_for_then_one_line(tmp_path, database_url, run_cli):
    if database_url:
        pytest.skip("SQLite's write lock")
    config = write_config(tmp_path / "c.toml")
    assert run_cli(config, "db", "upgrade").returncode == 0
    holder = sqlite3.connect(tmp_path / "data" / "convergence.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the busy timeout
    try:
        started = time.monotonic()
        result = run_cli(config, "user", "add", "alice", "-p", "pw")
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_line_exit_2(result, "busy", str(tmp_path / "data" / "convergence.db"))
    assert 2 <= waited < 30
    assert run_cli(config, "user", "add", "alice", "-p", "pw").returncode == 0  # and works again


def read_only(url: str, tmp_path) -> str:
    if not url:
        return f"sqlite:///file:{tmp_path / 'data' / 'convergence.db'}?mode=ro&uri=true"
    assert "options=" in url  # the test schema's search_path: add to the same options
    return url + "%20-cdefault_transaction_read_only%3Don"


def test_a_read_only_database_is_one_line(tmp_path, database_url, run_cli):
    config = write_config(tmp_path / "c.toml", database_url)
    assert run_cli(config, "user", "add", "alice", "-p", "pw").returncode == 0
    ro = write_config(tmp_path / "ro.toml", read_only(database_url, tmp_path))
    assert run_cli(ro, "user", "list").stdout == "alice@example.org\n"  # reading is fine
    one_line_exit_2(run_cli(ro, "user", "add", "bob", "-p", "pw"), "read-only")
    one_line_exit_2(run_cli(ro, "user", "del", "alice"), "read-only")


def test_a_database_from_a_newer_release_is_one_line(tmp_path, database_url, run_cli):
    config = write_config(tmp_path / "c.toml", database_url)
    assert run_cli(config, "db", "upgrade").returncode == 0
    db = Database(database_url or f"sqlite:///{tmp_path / 'data' / 'convergence.db'}")
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future' "
                          "WHERE version_num = (SELECT MIN(version_num) FROM alembic_version)"))
    db.close()
    for args in (("user", "add", "bob", "-p", "pw"), ("db", "current")):  # migrating or not
        one_line_exit_2(run_cli(config, *args), "9999_from_the_future", "newer Convergence")
    debug = run_cli(config, "user", "list", env={"CONVERGENCE_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "9999_from_the_future" in debug.stderr


def test_a_missing_database_is_one_line(tmp_path, database_url, run_cli):
    if database_url:
        missing = database_url.split("?")[0].rpartition("/")[0] + "/convergence_no_such_database"
        config = write_config(tmp_path / "c.toml", missing)
        one_line_exit_2(run_cli(config, "user", "list"), "convergence_no_such_database", "does not exist")
        return
    (tmp_path / "file").write_text("not a folder")
    config = write_config(tmp_path / "c.toml", data_dir=tmp_path / "file" / "data")
    one_line_exit_2(run_cli(config, "user", "list"), str(tmp_path / "file" / "data"))


def test_an_unreachable_postgresql_is_one_line_quickly(tmp_path, run_cli):
    config = write_config(tmp_path / "c.toml", f"postgresql+psycopg://127.0.0.1:{free_port()}/test")
    started = time.monotonic()
    one_line_exit_2(run_cli(config, "user", "add", "bob", "-p", "pw"), "unreachable", "127.0.0.1")
    assert time.monotonic() - started < 30
