"""GET /health/live and /health/ready on a real server: ready while the database answers and every
listener accepts, 503 naming the database while it is away (the SQLite file moved away; a private
PostgreSQL instance stopped), ready again once it is back (issue 17)."""
import glob
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from gevent.server import StreamServer

from convergence.plugins.http.metrics import listener_problems, readiness
from convergence.testing import free_port


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ready_becomes(url: str, status: int) -> dict:
    """/health/ready answers ``status`` at once: each check connects afresh (a pool whose
    connections died is dropped at the first failure), so no waiting is needed."""
    code, body = get(url + "/health/ready")
    assert code == status, body
    return body


def start(serve, **sections):
    http = free_port()
    config = {"http": {"listen": f"127.0.0.1:{http}"}, "xmpp": {"listen": f"127.0.0.1:{free_port()}"},
              "sip": {"listen": f"127.0.0.1:{free_port()}"}, **sections}
    return serve(config), f"http://127.0.0.1:{http}"


def test_live_and_ready_follow_the_sqlite_file(serve, tmp_path, database_url):
    if database_url:
        pytest.skip("the SQLite file case (the PostgreSQL one has a test of its own)")
    process, url = start(serve)
    assert get(url + "/health/live") == (200, {"status": "alive"})
    assert ready_becomes(url, 200) == {"status": "ready",
                                       "checks": {"database": "ok", "listeners": "ok"}}
    db = tmp_path / "data" / "convergence.db"
    db.rename(tmp_path / "elsewhere.db")  # as root, chmod 000 would not stop us reading it
    body = ready_becomes(url, 503)
    assert body["failing"] == ["database"] and body["status"] == "not ready"
    assert "unable to open database file" in body["checks"]["database"]
    assert get(url + "/health/live")[0] == 200  # alive all along
    (tmp_path / "elsewhere.db").rename(db)
    ready_becomes(url, 200)


def _postgres_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return str(Path(found[-1]).parent) if found else None


class PrivatePostgres:
    """A PostgreSQL instance of the test's own (initdb in tmp_path, trust authentication), run as
    the ``postgres`` user when the tests run as root (initdb refuses root)."""

    def __init__(self, folder: Path, port: int):
        self.bin, self.port, self.data = _postgres_bin(), port, folder / "pgdata"
        self.prefix = []
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def run(self, program: str, *args: str) -> None:
        subprocess.run([*self.prefix, f"{self.bin}/{program}", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.data.parent / "pg.log"),
                 "-o", f"-p {self.port} -k {self.data} -h 127.0.0.1 -F", "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


@pytest.mark.skipif(_postgres_bin() is None or (os.geteuid() == 0 and shutil.which("runuser") is None),
                    reason="PostgreSQL server binaries (initdb, pg_ctl) not installed")
def test_ready_flips_while_a_private_postgresql_goes_away_and_comes_back(serve):
    # not under tmp_path: its parents are private to root, and the server runs as postgres
    folder = Path(tempfile.mkdtemp(prefix="convergence-pg-"))
    postgres = PrivatePostgres(folder, free_port())
    try:
        process, url = start(serve, server={"database": postgres.url})
        ready_becomes(url, 200)
        postgres.stop()
        body = ready_becomes(url, 503)
        assert body["failing"] == ["database"] and body["checks"]["listeners"] == "ok"
        assert get(url + "/health/live")[0] == 200
        postgres.start()
        ready_becomes(url, 200)
        process.stop()
    finally:
        try:
            postgres.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(folder, ignore_errors=True)


def test_ready_names_a_listener_that_is_not_accepting(core):
    assert listener_problems(core) == {"listeners": "not started"}  # before serve started them
    server = StreamServer(("127.0.0.1", 0), lambda *_: None)
    server.start()
    core.listeners = [server]
    assert readiness(core)[0]
    server.stop_accepting()  # what a listener out of file descriptors does for a while
    name = f"StreamServer 127.0.0.1:{server.address[1]}"
    ok, body = readiness(core)
    assert not ok and body["failing"] == [name] and body["checks"][name] == "not accepting (paused)"
    server.stop()
    assert readiness(core)[1]["checks"][name] == "stopped"
