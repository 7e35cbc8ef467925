"""Prometheus metrics (`dessert-mcp[metrics]`): what the tools and the upstream did, served at /metrics.

Labels are tools, outcome codes, routes and statuses: a handful of values each, and never an account, a key or a
token. With `--workers N` every worker writes its figures to one directory (prometheus-client's multiprocess mode)
and any worker's /metrics answers for all of them; a single process keeps them in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from dessert_mcp.telemetry import Observer

logger = logging.getLogger("dessert_mcp")

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: a cached or shared answer takes under a millisecond, Dessert tens to hundreds, retries seconds.
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)


MetricT = TypeVar("MetricT", Counter, Histogram)


class Metrics(Observer):
    """The `Observer` that counts into Prometheus metrics; `render()` is the /metrics body."""

    content_type: Final = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self._shared_dir = os.environ.get(MULTIPROC_ENV) or None
        self._children: dict[tuple[int, tuple[str, ...]], object] = {}
        # Each instance has its own registry (tests build many apps in one process); in multiprocess mode the
        # values live in the directory's files and the registry only names them.
        self.registry = CollectorRegistry(auto_describe=True)
        if self._shared_dir is None:
            for collector in (ProcessCollector, PlatformCollector, GCCollector):
                collector(registry=self.registry)
        registry = self.registry
        self._calls = Counter(
            "dessert_mcp_tool_calls",
            "Tool calls by tool and outcome code (ok, or the error code the caller saw).",
            ["tool", "code"],
            registry=registry,
        )
        self._duration = Histogram(
            "dessert_mcp_tool_call_duration_seconds",
            "Tool call duration, retries and waits included.",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._in_flight = Gauge(
            "dessert_mcp_tool_calls_in_flight",
            "Tool calls being answered now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._upstream = Counter(
            "dessert_mcp_upstream_requests",
            "Requests to the Dessert API (each attempt) by route and HTTP status, or error code without an answer.",
            ["route", "status"],
            registry=registry,
        )
        self._retries = Counter(
            "dessert_mcp_upstream_retries",
            "Attempts retried after a retryable failure, by route and its error code.",
            ["route", "reason"],
            registry=registry,
        )
        self._shared = Counter(
            "dessert_mcp_singleflight_shared",
            "Calls answered by an identical request already in flight instead of a request of their own.",
            ["route"],
            registry=registry,
        )
        self._cache_hits = Counter(
            "dessert_mcp_cache_hits",
            "Calls answered from the short cache (DESSERT_CACHE_TTL_S) without asking Dessert.",
            ["route"],
            registry=registry,
        )

        self._ledger_failures = Counter(
            "dessert_mcp_ledger_failures",
            "Ledger writes and reads that failed (database full, read-only, locked or gone); calls answered anyway.",
            ["operation"],
            registry=registry,
        )
        self._webhooks = Counter(
            "dessert_mcp_alert_webhooks",
            "Alert webhook attempts by outcome: delivered, retried (another attempt follows), failed (for good); and "
            "abandoned: queued for a URL no longer configured, never sent.",
            ["outcome"],
            registry=registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker, in multiprocess mode)."""
        if self._shared_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=self._shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def call_started(self, tool: str) -> None:
        self._in_flight.inc()

    def call_finished(self, tool: str, code: str, duration_s: float) -> None:
        self._in_flight.dec()
        self._child(self._calls, tool, code).inc()
        self._child(self._duration, tool).observe(duration_s)

    def upstream_request(self, route: str, outcome: str) -> None:
        self._child(self._upstream, route, outcome).inc()

    def upstream_retry(self, route: str, code: str) -> None:
        self._child(self._retries, route, code).inc()

    def shared(self, route: str) -> None:
        self._child(self._shared, route).inc()

    def cache_hit(self, route: str) -> None:
        self._child(self._cache_hits, route).inc()

    def ledger_failed(self, operation: str) -> None:
        self._child(self._ledger_failures, operation).inc()

    def webhook(self, outcome: str) -> None:
        self._child(self._webhooks, outcome).inc()

    def _child(self, metric: MetricT, *labels: str) -> MetricT:
        """`metric.labels(*labels)`, kept: every call reports a few, and the label values are a handful each."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child  # type: ignore[return-value]  # a labelled child is of its metric's type


@contextlib.contextmanager
def shared_by_workers() -> Iterator[Callable[[int], None]]:
    """For a supervisor of worker processes: one metrics directory for all of them, set in the environment the
    workers inherit. Yields what to call with a dead worker's pid; removes the directory it made at the end.

    An operator's own PROMETHEUS_MULTIPROC_DIR is used as it is (and, as prometheus-client asks, is theirs to
    empty between runs).
    """
    given = os.environ.get(MULTIPROC_ENV)
    path = given or tempfile.mkdtemp(prefix="dessert-mcp-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield lambda pid: _multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    finally:
        if not given:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(path, ignore_errors=True)
