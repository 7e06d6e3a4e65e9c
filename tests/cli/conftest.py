"""``run_cli`` and ``start_cli``: the command line forked from the fork server (see __init__)."""
import subprocess
from pathlib import Path

import pytest

from convergence.testing import cli_env


@pytest.fixture
def run_cli(run_convergence):
    def run(config: Path, *args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_convergence("--config", config, *args, cwd=config.parent, env=env, timeout=timeout)
    return run


@pytest.fixture
def start_cli(fork_server):
    def start(config: Path, *args):
        return fork_server.launch(["--config", str(config), *map(str, args)], config.parent, cli_env(),
                                  stderr=subprocess.PIPE)
    return start
