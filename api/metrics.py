"""Prometheus metrics of the API, named envlink_*.

Requests are counted and timed by route template (`/v1/stations/{code}`, never the raw path, so
the number of series stays bounded) and status. The pool gauges say how many of this process's
connections are in use and how many requests wait for one. Readings, alert transitions and the
outbox's depth are counted in the database by whichever process did the work (a worker, most
often), so /metrics reads them there at each scrape: they are the same whichever API process
answers.

Under `envlink api --workers N` every process writes its values to files in
PROMETHEUS_MULTIPROC_DIR, which the parent process makes and removes, and any process's
/metrics adds them up (prometheus-client's multiprocess mode). prometheus-client reads that
variable when it is first imported, so the parent sets it before it starts the processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from store.metrics import DatabaseCounts

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """One API process's metrics, and the text /metrics answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR))
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "envlink_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "envlink_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "envlink_db_pool_connections_in_use",
            "The API's pooled database connections lent to requests",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.pool_waiting = Gauge(
            "envlink_db_pool_requests_waiting",
            "Requests waiting for a pooled database connection",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self._labelled: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._pool_counts: tuple[int, int] | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        labelled = self._labelled.get((method, route, status))
        if labelled is None:
            # Found once per method, route and status: labels() checks and locks each time.
            labels = (method, route, str(status))
            labelled = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._labelled[(method, route, status)] = labelled
        count, latency = labelled
        count.inc()
        latency.observe(seconds)

    def observe_pool(self, pool: AsyncConnectionPool) -> None:
        """Set the pool gauges from the pool's own counts (written only when they change)."""
        stats = pool.get_stats()
        counts = (
            stats.get("pool_size", 0) - stats.get("pool_available", 0),
            stats.get("requests_waiting", 0),
        )
        if counts != self._pool_counts:
            self.pool_in_use.set(counts[0])
            self.pool_waiting.set(counts[1])
            self._pool_counts = counts

    def render(self, counts: DatabaseCounts | None) -> bytes:
        """The Prometheus text format: this process's (or every process's) metrics, then the
        database's counts (None: the database is away)."""
        if self.multiprocess:
            gathered = CollectorRegistry()
            multiprocess.MultiProcessCollector(gathered)  # type: ignore[no-untyped-call]
            own = generate_latest(gathered)
        else:
            own = generate_latest(self.registry)
        from_database = CollectorRegistry()
        from_database.register(_Counts(counts))
        return own + generate_latest(from_database)

    def close(self) -> None:
        """Drop this process's live gauges from the shared files (multiprocess mode)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _Counts(Collector):
    def __init__(self, counts: DatabaseCounts | None) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "envlink_database_up", "1 while the database answers; its counts follow only then"
        )
        up.add_metric([], 0 if self._counts is None else 1)
        if self._counts is None:
            return [up]
        readings = CounterMetricFamily(
            "envlink_readings",
            "Readings taken in, by source and outcome (accepted, duplicate, revised, rejected)",
            labels=["source", "outcome"],
        )
        for (source, outcome), count in sorted(self._counts.readings.items()):
            readings.add_metric([source, outcome], count)
        transitions = CounterMetricFamily(
            "envlink_alert_transitions",
            "Alert events, by kind (pending, firing, escalated, resolved, ...)",
            labels=["kind"],
        )
        for kind, count in sorted(self._counts.alert_transitions.items()):
            transitions.add_metric([kind], count)
        outbox = GaugeMetricFamily(
            "envlink_outbox_depth", "Notifications waiting to be delivered (pending)"
        )
        outbox.add_metric([], self._counts.outbox_pending)
        return [up, readings, transitions, outbox]
