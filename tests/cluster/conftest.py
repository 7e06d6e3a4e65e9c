"""Fixtures of the cluster tests: nodes are real ``convergence serve`` processes sharing the test's
PostgreSQL schema and a Redis key prefix of the test's own (docs/cluster.md)."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from convergence.testing import free_port

REDIS = os.environ.get("CONVERGENCE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix():
    """(a client of the test's Redis, a key prefix of this test's own); the prefix's keys are
    deleted afterwards. Skipped without Redis."""
    import redis

    client = redis.Redis.from_url(REDIS, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS} (CONVERGENCE_TEST_REDIS): {exc}")
    prefix = f"cvtest:{uuid.uuid4().hex[:12]}:"
    yield client, prefix
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def cluster_table(database_url, redis_prefix):
    """The ``[cluster]`` table of every node of this test: a private key prefix, a short
    node_timeout. Skipped without PostgreSQL (a cluster needs it): run with
    ``--convergence-database postgresql+psycopg://127.0.0.1:5432/test``."""
    if not database_url:
        pytest.skip("a cluster needs PostgreSQL: run with --convergence-database postgresql+psycopg://…")
    return {"redis": REDIS, "prefix": redis_prefix[1], "node_timeout": 1.0, "handoff_timeout": 1.0}


@pytest.fixture
def node(convergence_server, cluster_table):
    """``node(name, accounts=None, **sections)``: one more cluster member (an ``XmppServer`` of the
    scenario kit: XMPP, SIP and HTTP on free ports) with ``node_id`` ``name``."""
    def start(name: str, accounts: dict | None = None, **sections):
        return convergence_server(accounts, cluster={**cluster_table, "node_id": name}, **sections)
    return start


class RedisServer:
    """A redis-server of the test's own (on a free port), to stop and start again: an outage."""

    def __init__(self, port: int, folder):
        self.port, self.folder = port, folder
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:  # until it accepts connections
            if "Ready to accept connections" in line:
                return
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path, cluster_table):
    """(a RedisServer of this test's own, the ``[cluster]`` table of nodes that use it)."""
    if not shutil.which("redis-server"):
        pytest.skip("no redis-server to start")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server, {**cluster_table, "redis": f"redis://127.0.0.1:{server.port}/0"}
    server.stop()
