"""A cluster needs PostgreSQL: with SQLite, ``[cluster]`` or more than one worker stops start-up
with exit status 2 and one line (issue 14). Runs on the SQLite run too (no server starts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONVERGENCE = str(Path(sys.executable).parent / "convergence")


@pytest.mark.parametrize("table, args", [
    ("[cluster]\nnode_timeout = 5\n", []),
    ("workers = 2\n", []),
    ("", ["--workers", "2"]),
])
def test_sqlite_refuses_a_cluster(tmp_path, table, args):
    config = tmp_path / "c.toml"
    server, cluster = (table, "") if table.startswith("workers") else ("", table)
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\n{server}{cluster}')
    done = subprocess.run([CONVERGENCE, "--config", str(config), "serve", *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "need PostgreSQL" in lines[0], done.stderr
