"""A cluster needs PostgreSQL: with SQLite, ``[cluster]`` or more than one worker stops start-up
with exit status 2 and one line (issue 14). Runs on the SQLite run too (no server starts)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("table, args", [
    ("[cluster]\nnode_timeout = 5\n", []),
    ("workers = 2\n", []),
    ("", ["--workers", "2"]),
])
def test_sqlite_refuses_a_cluster(tmp_path, table, args, run_convergence):
    config = tmp_path / "c.toml"
    server, cluster = (table, "") if table.startswith("workers") else ("", table)
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\n{server}{cluster}')
    done = run_convergence("--config", config, "serve", *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "need PostgreSQL" in lines[0], done.stderr
