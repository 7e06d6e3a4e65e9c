"""``GET /metrics`` and the health checks ``GET /health/live`` and ``GET /health/ready``.

``/metrics`` is the core's own registry (:mod:`convergence.metrics`: ``core.metrics.registry``)
in the Prometheus text format, or OpenMetrics when the scraper asks for it (``Accept:
application/openmetrics-text``), written by ``prometheus_client``. It is served on the HTTP
listener, or only on ``[http] metrics_listen`` when that is set, or not at all with ``[http]
metrics = false``; only clients from ``[http] metrics_allow`` (default: loopback) may read it,
the others get 403.

The health checks answer anyone, on both listeners (a Kubernetes probe comes from the node, not
loopback), with JSON and nothing secret:

- ``/health/live``: the process answers (200 ``{"status": "alive"}``);
- ``/health/ready``: 200 ``{"status": "ready", "checks": {...}}`` when the database answers and
  every listener ``serve`` started is accepting; else 503 ``{"status": "not ready", "failing":
  [names], "checks": {name: reason}}``. The database check opens a new connection each time (a
  SQLite file is opened afresh, without creating it, so a file that was removed or made unreadable
  is noticed although the pool's connections still hold the old one).
"""
from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client.exposition import choose_encoder
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from convergence.config import Option, optional_listen_address
from convergence.listeners import networks

def metrics_options() -> dict[str, Option]:
    """The ``[http]`` keys of the metrics endpoint."""
    return {
        "metrics": Option(True, "serve the Prometheus metrics at GET /metrics"),
        "metrics_listen": Option("", '"host:port" of a listener of its own for /metrics and the '
                                 "health checks; empty: the HTTP listener", optional_listen_address),
        "metrics_allow": Option(["127.0.0.0/8", "::1"], "client addresses or networks (CIDR) allowed to read "
                                "/metrics; others get 403", networks),
    }


def _core():
    return current_app.extensions["convergence"]


def _allowed(remote: str | None, allow) -> bool:
    try:
        address = ipaddress.ip_address((remote or "").partition("%")[0])
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in network for network in allow)


# ---- health -------------------------------------------------------------------------------------

def database_problem(core) -> str | None:
    """Why the database does not answer, or None. A SQLite file is opened afresh (read-write,
    never created); PostgreSQL answers ``SELECT 1`` on a connection from the pool (a dead one is
    dropped by the pool and the next check connects anew)."""
    db = core.db
    try:
        if db.is_sqlite and db.url.database not in (None, "", ":memory:"):
            path = Path(db.url.database).absolute()
            conn = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=2.0)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                conn.close()
        else:
            with db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return reason[0] if reason else type(exc).__name__
    return None


def listener_problems(core) -> dict[str, str]:
    """The listeners ``serve`` started that are not accepting (stopped, or pausing after running
    out of file descriptors), by "Class host:port"; ``{"listeners": "starting"}`` before they
    all started."""
    servers = getattr(core, "listeners", None)
    if servers is None:
        return {"listeners": "not started"}
    problems = {}
    for server in servers:
        host, port = server.address[:2]
        name = f"{type(server).__name__} {host}:{port}"
        started = getattr(server, "started", None)
        if started is None:  # not a gevent server (a UDP reader): its socket must be open
            sock = getattr(server, "socket", None)
            if sock is None or sock.fileno() < 0:
                problems[name] = "closed"
        elif not started:
            problems[name] = "stopped"
        elif getattr(server, "_watcher", None) is None:  # gevent's accept watcher: None while paused
            problems[name] = "not accepting (paused)"
    return problems


def readiness(core) -> tuple[bool, dict]:
    checks = {"database": database_problem(core) or "ok"}
    if core.cluster is not None:  # clustered: the cross-node path must be up (docs/cluster.md)
        checks["redis"] = "ok" if core.cluster.reachable else "unreachable"
    problems = listener_problems(core)
    checks.update(problems or {"listeners": "ok"})
    failing = sorted(name for name, state in checks.items() if state != "ok")
    body = {"status": "not ready" if failing else "ready", "checks": checks}
    if failing:
        body["failing"] = failing
    return not failing, body


# ---- the blueprint ------------------------------------------------------------------------------

def blueprint(serve_metrics: bool) -> Blueprint:
    """The health checks, and ``/metrics`` when ``serve_metrics``."""
    page = Blueprint(f"health{'_metrics' if serve_metrics else ''}", __name__)

    @page.get("/health/live")
    def live():
        return {"status": "alive"}

    @page.get("/health/ready")
    def ready():
        ok, body = readiness(_core())
        return jsonify(body), 200 if ok else 503

    if serve_metrics:
        @page.get("/metrics")
        def metrics():
            core = _core()
            if not _allowed(request.remote_addr, core.config["http"]["metrics_allow"]):
                return jsonify(status=403, message="metrics are not served to this address "
                                                   "([http] metrics_allow)"), 403
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            return Response(encoder(core.metrics.registry), content_type=content_type)

    return page


def metrics_app(core) -> Flask:
    """The application of ``[http] metrics_listen``: ``/metrics`` and the health checks only."""
    app = Flask("convergence-metrics")
    app.extensions["convergence"] = core
    app.register_blueprint(blueprint(core.config["http"]["metrics"]))
    return app
