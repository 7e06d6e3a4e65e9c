"""The operator's command line run as a real process: database conditions, bulk accounts.

``run_cli(config_path, *args)`` runs ``convergence`` with that configuration and no
``CONVERGENCE_*`` variable from the environment but those given; ``write_config(path,
database_url, **server)`` writes a configuration whose database is the test's (SQLite in its
``data_dir``, or the PostgreSQL schema of ``--convergence-database``).
"""
import os
import subprocess
import sys
from pathlib import Path

CONVERGENCE = str(Path(sys.executable).parent / "convergence")


def cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGENCE")}
    env.update(extra)
    return env


def run_cli(config: Path, *args, env: dict | None = None, timeout: float = 120, **popen):
    return subprocess.run([CONVERGENCE, "--config", str(config), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or cli_env(), cwd=config.parent, **popen)


def start_cli(config: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([CONVERGENCE, "--config", str(config), *map(str, args)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
                            cwd=config.parent)


def write_config(path: Path, database_url: str = "", **server) -> Path:
    server = {"domain": "example.org", "data_dir": str(path.parent / "data"), **server}
    if database_url:
        server.setdefault("database", database_url)
    path.write_text("[server]\n" + "".join(f'{k} = "{v}"\n' for k, v in server.items()))
    return path
