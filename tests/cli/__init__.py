"""The operator's command line run as a real process: database conditions, bulk accounts.

The fixtures ``run_cli(config_path, *args, env=None, timeout=120)`` (a finished
``subprocess.CompletedProcess``) and ``start_cli(config_path, *args)`` (a running process, stdout
and stderr piped) run ``convergence --config config_path ARGS`` in the configuration's folder,
forked from the test kit's fork server, with no ``CONVERGENCE_*`` variable from the environment
(``env``: variables to add, e.g. ``{"CONVERGENCE_DEBUG": "1"}``); ``write_config(path,
database_url, **server)`` writes a configuration whose database is the test's (SQLite in its
``data_dir``, or the PostgreSQL schema of ``--convergence-database``).
"""
from pathlib import Path


def write_config(path: Path, database_url: str = "", **server) -> Path:
    server = {"domain": "example.org", "data_dir": str(path.parent / "data"), **server}
    if database_url:
        server.setdefault("database", database_url)
    path.write_text("[server]\n" + "".join(f'{k} = "{v}"\n' for k, v in server.items()))
    return path
