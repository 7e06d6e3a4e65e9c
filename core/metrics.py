"""The metrics of one core: a ``prometheus_client`` registry of its own, read at scrape time.

Several cores run in one process (the tests start two), so nothing goes to prometheus_client's
global default registry: each :class:`~convergence.core.Core` has a :class:`Metrics` whose
``registry`` (a ``CollectorRegistry``) holds

- the process's CPU time, resident memory and open files (prometheus_client's
  ``ProcessCollector``, registered into this registry);
- the core's own figures, read from its objects when scraped (:class:`CoreCollector`): live
  endpoints per protocol (``PresenceHub.counts``), logins per protocol, failed logins per protocol
  (the plugins' :class:`~convergence.ratelimit.FailureLimiter` objects, reported with
  :meth:`Metrics.count_failures`), messages routed by source and destination protocol and outcome
  (the router's running ``counts``), the routing latency and database query latency histograms,
  and the offline store's size (one ``COUNT`` query per scrape);
- what each plugin adds with the ``add_metrics(core, registry)`` hook, called once, when the
  registry is first read (after ``on_startup``, so the plugins' objects exist).

Counting on hot paths must stay cheap (issue 17: at most 3 % of messages/s): the router adds each
message to a dictionary of counts by (source, destination, outcome, condition) and times one
message in 16 into a :class:`Histogram` (a bisect and two additions, no lock: the event loop runs
one greenlet at a time); turning them into metric families happens only when scraped.

The HTTP plugin serves the registry at ``GET /metrics``; ``convergence status`` reads
:meth:`Metrics.status` over the control path. No protocol is named here: the protocol labels are
what the plugins say (``Endpoint.protocol``, the ``source`` of ``Core.send``, a route's
``protocol``).
"""
from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections import Counter

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from .store import offline

log = logging.getLogger(__name__)

#: seconds: routing one message in memory takes tens of microseconds; storing it, milliseconds
ROUTING_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 1.0)
#: seconds: one SQL statement, from the driver's execute to its return
QUERY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5)


class Histogram:
    """Observations counted into buckets (upper bounds ``bounds``, seconds) plus their sum: cheap
    enough for the routing path; :meth:`family` turns it into a Prometheus histogram."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value: le semantics
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation)
        buckets, total = [], 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            buckets.append((repr(bound), total))
        buckets.append(("+Inf", total + self.counts[-1]))
        family.add_metric([], buckets, self.sum)
        return family


def family(kind: str, name: str, documentation: str, value) -> GaugeMetricFamily | CounterMetricFamily:
    """A ``"gauge"`` or ``"counter"`` family: one sample ``value``, or with a dict ``{label value:
    number}`` one sample per entry, labelled ``value``'s ``label`` (give ``(label, dict)``)."""
    make = GaugeMetricFamily if kind == "gauge" else CounterMetricFamily
    if isinstance(value, tuple):
        label, counts = value
        metric = make(name, documentation, labels=[label])
        for key, n in sorted(counts.items()):
            metric.add_metric([key], n)
        return metric
    return make(name, documentation, value=value)


class Collector:
    """A plugin's collector: ``collect()`` (a subclass's) reads ``self.source`` at each scrape.
    ``describe`` returns nothing, so the registry does not collect at registration."""

    def __init__(self, source):
        self.source = source

    def describe(self):
        return []


class Metrics:
    """The metrics of one core (``core.metrics``)."""

    def __init__(self, core):
        self.core = core
        self.started = time.time()
        self.queries = Histogram(QUERY_BUCKETS)
        self._limiters: list[tuple[str, object]] = []  # (protocol, FailureLimiter)
        self._registry: CollectorRegistry | None = None
        engine = core.db.engine
        event.listen(engine, "before_cursor_execute", self._query_started)
        event.listen(engine, "after_cursor_execute", self._query_ended)

    # -- database query latency (SQLAlchemy engine events of this core's database) --
    @staticmethod
    def _query_started(conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["convergence.query_started"] = time.perf_counter()

    def _query_ended(self, conn, cursor, statement, parameters, context, executemany) -> None:
        started = conn.info.pop("convergence.query_started", None)
        if started is not None:
            self.queries.observe(time.perf_counter() - started)

    # -- what plugins report --
    def count_failures(self, protocol: str, limiter) -> None:
        """Report the failed logins ``limiter`` (a FailureLimiter) counts as ``protocol``'s."""
        self._limiters.append((protocol, limiter))

    def failures(self) -> Counter:
        counts = Counter()
        for protocol, limiter in self._limiters:
            counts[protocol] += limiter.failures
        return counts

    # -- the registry --
    @property
    def registry(self) -> CollectorRegistry:
        """Built at first use: the process and core collectors, then the plugins' ``add_metrics``."""
        if self._registry is None:
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
            registry.register(CoreCollector(self.core, self))
            registry.register(ClusterCollector(self.core))
            self.core.hook.add_metrics(core=self.core, registry=registry)
            self._registry = registry
        return self._registry

    def status(self) -> dict:
        """What ``convergence status`` prints: a JSON-able snapshot of this core's figures (the
        running totals; the command takes two and shows the rates), and every gauge of the
        registry with its help text."""
        routed, received, sent = Counter(), Counter(), Counter()
        for (source, destination, outcome, _condition), n in self.core.router.counts.items():
            routed[outcome] += n
            received[source] += n
            if outcome == "delivered":
                sent[destination] += n
        gauges = []
        for family in self.registry.collect():
            if family.type == "gauge" and not family.name.startswith("process_"):
                for sample in family.samples:
                    gauges.append([sample.name, sample.labels, sample.value, family.documentation])
        return {"domain": self.core.domain, "pid": os.getpid(), "started": self.started,
                "now": time.time(), "endpoints": self.core.presence.counts(),
                "logins": dict(self.core.presence.logins), "failures": dict(self.failures()),
                "routed": dict(routed), "received": dict(received), "sent": dict(sent),
                "gauges": gauges}


class CoreCollector:
    """The core's figures as metric families, read from its objects at each scrape."""

    def __init__(self, core, metrics: Metrics):
        self.core = core
        self.metrics = metrics

    def describe(self):
        return []  # nothing worth checking for clashes: the names below are the core's own

    def collect(self):
        core = self.core
        yield family("gauge", "convergence_endpoints", "Live endpoints (XMPP resources, SIP "
                     "bindings, HTTP event streams, ...) by protocol",
                     ("protocol", core.presence.counts()))
        yield family("counter", "convergence_logins", "Endpoints that came online (logins, new "
                     "SIP bindings) by protocol", ("protocol", core.presence.logins))
        yield family("counter", "convergence_login_failures", "Failed authentications (wrong "
                     "password, unknown account or token) by protocol",
                     ("protocol", self.metrics.failures()))
        routed = CounterMetricFamily(
            "convergence_messages_routed", "Messages routed, by the protocol they came in by "
            "(source), where they went (destination: a protocol, 'store' or 'none') and outcome "
            "(delivered, stored, discarded, refused with an RFC 6120 condition)",
            labels=["source", "destination", "outcome", "condition"])
        for key, n in sorted(core.router.counts.items()):
            routed.add_metric(list(key), n)
        yield routed
        yield core.router.latency.family("convergence_routing_seconds", "Time the router took "
                                         "to resolve and hand on a message (one in 16 is timed)")
        yield self.metrics.queries.family("convergence_db_query_seconds",
                                          "Time one SQL statement took")
        try:
            stored = offline.total(core.db)
        except SQLAlchemyError:
            return  # the database is away: /health/ready says so; the rest is still worth reading
        yield family("gauge", "convergence_offline_messages", "Messages waiting in the offline "
                     "store (XEP-0160)", stored)


class ClusterCollector(Collector):
    """In a cluster (``core.cluster``, docs/cluster.md): whether this node reaches Redis, and every
    live node's endpoints by protocol as the directory holds them (read from Redis at each scrape,
    so any node's ``/metrics`` shows the whole cluster). Nothing without a cluster."""

    def collect(self):
        cluster = self.source.cluster
        if cluster is None:
            return
        yield family("gauge", "convergence_cluster_redis_up", "1 when this node's last write "
                     "reached Redis", int(cluster.reachable))
        try:
            nodes = cluster.status()
        except Exception as exc:  # Redis unreachable: the gauge above says so, the rest is unknown
            log.info("metrics: cluster directory not read: %s", exc)
            return
        yield family("gauge", "convergence_cluster_nodes", "Live nodes (fresh heartbeat)", len(nodes))
        endpoints = GaugeMetricFamily("convergence_cluster_node_endpoints", "Endpoints each live "
                                      "node holds, by protocol (the directory)",
                                      labels=["node", "protocol"])
        for beat in nodes:
            for protocol, n in sorted(beat.get("endpoints", {}).items()):
                endpoints.add_metric([beat["node"], protocol], n)
        yield endpoints
