"""Prometheus metrics (``--metrics-address``), on a registry of each SuperLink's own.

Counters and histograms are updated as calls happen; values that live in the state store
(nodes, runs, messages) or the scheduler are read once per scrape, asynchronously, and
served from that snapshot, so a scrape costs three state reads (the counts, the runs and the
replica leases) whatever the fleet size.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from superlink_async.logs import logger
from superlink_async.state.base import (
    FINISHED,
    LinkState,
    PoolUsage,
    StateStats,
    StateUnavailableError,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SchedulerCounts(Protocol):
    """What the scheduler reports: children alive, launches, failed launches."""

    @property
    def alive(self) -> int:
        """Children running now."""

    launches: int
    launch_failures: int


@dataclass
class _Snapshot:
    stats: StateStats | None = None
    runs: Tally[str] = field(default_factory=Tally)
    serverapps_alive: int = 0
    launches: int = 0
    launch_failures: int = 0
    replicas: int = 0
    pool: PoolUsage | None = None


def _pool_metrics(pool: PoolUsage) -> Iterator[Metric]:
    """The database connection pool's series: how full it is, and how long calls waited."""
    connections = GaugeMetricFamily(
        "superlink_database_connections",
        "Connections to the PostgreSQL database: open, and busy (handed to an operation).",
        labels=["state"],
    )
    connections.add_metric(["open"], pool.open)
    connections.add_metric(["busy"], pool.busy)
    yield connections
    yield GaugeMetricFamily(
        "superlink_database_connections_max",
        "Most connections this process opens (--database-pool-size).",
        value=pool.max_size,
    )
    yield CounterMetricFamily(
        "superlink_database_connection_acquisitions",
        "Connections handed to state operations.",
        value=pool.acquisitions,
    )
    yield CounterMetricFamily(
        "superlink_database_connection_wait_seconds",
        "Seconds state operations waited for a connection (a free one, or a new one opened).",
        value=pool.waited_seconds,
    )


class _SnapshotCollector(Collector):
    """Serves the values read by ``Metrics.refresh`` just before the scrape."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot.stats is not None:
            stats = snapshot.stats
            for name, doc, value in (
                ("nodes_registered", "Nodes registered (online or not).", stats.nodes_registered),
                ("nodes_online", "Nodes whose liveness has not lapsed.", stats.nodes_online),
                (
                    "messages_waiting",
                    "Instructions stored and not yet pulled by their node.",
                    stats.instructions_waiting,
                ),
                (
                    "messages_in_flight",
                    "Instructions pulled by their node, awaiting the ServerApp's pull.",
                    stats.instructions_delivered,
                ),
                (
                    "replies_stored",
                    "Node replies not yet pulled by the ServerApp.",
                    stats.replies_stored,
                ),
                (
                    "messages_expired",
                    "Instructions past their TTL, not yet purged.",
                    stats.messages_expired,
                ),
            ):
                yield GaugeMetricFamily(f"superlink_{name}", doc, value=value)
        runs = GaugeMetricFamily("superlink_runs", "Runs by status.", labels=["status"])
        for status, count in sorted(snapshot.runs.items()):
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(
            "superlink_serverapp_processes",
            "Per-run children alive (flwr-serverapp, or flwr-simulation for simulations).",
            value=snapshot.serverapps_alive,
        )
        yield CounterMetricFamily(
            "superlink_serverapp_launches",
            "flwr-serverapp processes started.",
            value=snapshot.launches,
        )
        yield CounterMetricFamily(
            "superlink_serverapp_launch_failures",
            "Runs failed because flwr-serverapp could not start or died before claiming them.",
            value=snapshot.launch_failures,
        )
        yield GaugeMetricFamily(
            "superlink_replicas",
            "Replica leases held in the shared state (replicas alive, and lost ones whose "
            "lease lapsed but was not reaped yet).",
            value=snapshot.replicas,
        )
        if snapshot.pool is not None:
            yield from _pool_metrics(snapshot.pool)


class Metrics:
    """Every series of one SuperLink; ``superlink_replica_info`` names its replica."""

    def __init__(self, replica_id: str) -> None:
        self.registry = CollectorRegistry()
        Gauge(
            "superlink_replica_info",
            "The replica id of this SuperLink process (always 1).",
            ["replica"],
            registry=self.registry,
        ).labels(replica_id).set(1)
        self.calls = Counter(
            "superlink_rpc_requests",
            "Calls served, by API, method and outcome.",
            ["api", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "superlink_rpc_duration_seconds",
            "Time to serve a call, by API and method.",
            ["api", "method"],
            registry=self.registry,
        )
        self.state_latency = Histogram(
            "superlink_state_operation_duration_seconds",
            "Time of each state store operation.",
            ["operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.shed = Counter(
            "superlink_calls_shed",
            "Fleet calls refused with UNAVAILABLE while too many Fleet calls were in flight.",
            ["api", "method"],
            registry=self.registry,
        )
        self.early_answers = Counter(
            "superlink_idle_polls_answered_early",
            "Polls of nodes with nothing waiting, answered before their signature check "
            "while the event loop ran late.",
            ["method"],
            registry=self.registry,
        )
        self.fleet_held = Counter(
            "superlink_fleet_reads_held_seconds",
            "Seconds for which the Fleet listeners' connections were not read, while a "
            "ServerApp's or the CLI's request body arrived.",
            registry=self.registry,
        )
        self.accept_pauses = Counter(
            "superlink_accept_paused",
            "Times a listener stopped accepting connections for a while because the "
            "process was out of file descriptors.",
            ["listener"],
            registry=self.registry,
        )
        # process_open_fds and process_max_fds, among others: how close that limit is.
        ProcessCollector(registry=self.registry)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)

    def watch_load(self, loop_lag: Callable[[], float], fleet_in_flight: Callable[[], int]) -> None:
        """Report the two signals admission control decides on, read at each scrape."""
        Gauge(
            "superlink_event_loop_lag_seconds",
            "How late the event loop runs (recent peak of a 20 ms timer's lateness).",
            registry=self.registry,
        ).set_function(loop_lag)
        Gauge(
            "superlink_fleet_calls_in_flight",
            "Fleet calls admitted and not yet answered.",
            registry=self.registry,
        ).set_function(fleet_in_flight)

    @asynccontextmanager
    async def observe_call(self, api: str, method: str) -> AsyncIterator[None]:
        """Count a call and time it; the outcome label is the exception's name, or OK."""
        started = time.perf_counter()
        code = "OK"
        try:
            yield
        except BaseException as exc:
            code = getattr(getattr(exc, "status", None), "name", None) or type(exc).__name__
            raise
        finally:
            self.latency.labels(api, method).observe(time.perf_counter() - started)
            self.calls.labels(api, method, code).inc()

    def timed_state(self, state: LinkState) -> LinkState:
        """``state`` with every operation's duration recorded."""
        return cast(LinkState, _TimedState(state, self.state_latency))

    async def refresh(self, state: LinkState, scheduler: SchedulerCounts | None) -> None:
        """Read what the next scrape reports from the state store and the scheduler."""
        runs = await state.get_runs()
        self._snapshot.snapshot = _Snapshot(
            stats=await state.get_stats(),
            runs=Tally(
                f"{run.status.status}:{run.status.sub_status}"
                if run.status.status == FINISHED
                else run.status.status
                for run in runs
            ),
            serverapps_alive=scheduler.alive if scheduler else 0,
            launches=scheduler.launches if scheduler else 0,
            launch_failures=scheduler.launch_failures if scheduler else 0,
            replicas=len(await state.get_replica_leases()),
            pool=state.connection_pool,
        )

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)


#: Methods forwarded untimed: ``listen`` runs until cancelled, it is no operation to time.
_UNTIMED = frozenset({"listen"})


class _TimedState:
    """A LinkState proxy that times every coroutine method it forwards (but ``_UNTIMED``)."""

    def __init__(self, state: LinkState, histogram: Histogram) -> None:
        self._state = state
        self._histogram = histogram

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._state, name)
        if not callable(attribute) or name.startswith("_") or name in _UNTIMED:
            return attribute
        histogram = self._histogram.labels(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attribute(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - started)

        return timed


def metrics_app(metrics: Metrics, refresh: Callable[[], Awaitable[None]]) -> web.Application:
    """``GET /metrics``: refresh the snapshot, then render every series.

    While the state store cannot be reached, the figures read from it are the last ones
    read; the call counters (``code="StateUnavailableError"``) show the outage.
    """

    async def scrape(request: web.Request) -> web.Response:
        try:
            await refresh()
        except StateUnavailableError as exc:
            logger.warning("Metrics keep the state's last figures: %s", exc)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app
