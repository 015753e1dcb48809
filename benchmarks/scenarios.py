"""The scenarios, run against every target in alternation, and what each of them records.

A (idle fleet): one server per session; the fleet grows through the configured sizes and
each size is measured over a window, until a size is not sustained (p99 over the limit, a
call failed, or nodes could not register) or the session's time budget runs out.
B (one round): one server per session, one run; for each round the fleet grows to the
round's size and the driver times one instruction per node, from push to last reply.
C (at the edge): one server per session, one run; the idle fleet grows step by step until
polling alone keeps the server busy (N_sat), then a round as B's runs at N_sat and at
multiples of it, with the fleet's polling latency, sheds and lost nodes meanwhile.
D (replicas): A's search and one round of B on one and on more SuperLink processes sharing
one PostgreSQL database, new nodes dialling the replicas in turn and the driver the first;
each replica's CPU is read on its own, beside the calls it served.
Each (run, backend) measures every target back to back, their order rotating per run, so
slow drifts of the machine hit every target alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.config import RoundSpec, Settings
from benchmarks.driver import MISSING, RoundOutcome, ServerAppDriver
from benchmarks.loadgen import Fleet, Window
from benchmarks.profiling import ProfileRow, ProfileSummary, Sampler, find_py_spy
from benchmarks.stats import percentile
from benchmarks.superlink import Replicas, SuperLinkProcess, Target
from superlink_async.testing.postgres import PostgresServer

#: A node gets this long to register once its start time has come.
REGISTER_TIMEOUT = 10.0
#: Registered nodes must show up in GetNodes within this.
ONLINE_TIMEOUT = 5.0
#: Calls of a window still running this long after it closed count with their age so far.
COLLECT_GRACE = 5.0
#: Last-run profiles: py-spy's sampling rate, and how many functions the report lists.
PROFILE_RATE = 50
PROFILE_TOP = 12
#: The frame of an ECDSA signature check in our server (``superlink_async.services``).
SIGNATURE_CHECK = "is_signed_by (superlink_async/services/signatures.py)"
#: Frames of the state: our backends and the database drivers under them.
STATE_FILES = ("superlink_async/state/", "asyncpg/", "aiosqlite/")


@dataclass(frozen=True)
class MethodStats:
    """Latency of one Fleet method within a window."""

    calls: int
    p50_ms: float
    p99_ms: float


@dataclass
class IdleStep:
    """One fleet size measured over one window."""

    nodes: int
    registered: int
    connections: int
    seconds: float
    calls: int
    rate: float
    p50_ms: float
    p99_ms: float
    methods: dict[str, MethodStats]
    errors: dict[str, int]
    ramp_errors: dict[str, int]
    lost_nodes: int
    server_cpu_per_1k: float
    server_cpu_percent: float
    rss_mib: float
    hwm_mib: float
    rss_per_1k_nodes_mib: float
    loadgen_cpu_percent: float
    loadgen_lag_p99_ms: float
    sustained: bool
    #: Each replica's CPU seconds per 1,000 calls it served (one entry: the server's).
    replica_cpu_per_1k: list[float] = field(default_factory=list)
    #: The window's calls by the replica they went to, in replica order.
    replica_calls: list[int] = field(default_factory=list)
    #: The PostgreSQL server's CPU seconds (all its processes) per 1,000 calls; None without.
    database_cpu_per_1k: float | None = None


@dataclass
class IdleSession:
    """Scenario A on one server: the sizes measured and why it stopped."""

    target: str
    backend: str
    run: int
    baseline_rss_mib: float
    steps: list[IdleStep] = field(default_factory=list)
    stopped: str = ""
    #: SuperLink processes on one database (scenario D); 1 in scenario A.
    replicas: int = 1

    @property
    def largest_sustained(self) -> int:
        """The largest fleet size whose p99 stayed under the limit (0 if none)."""
        return max((step.nodes for step in self.steps if step.sustained), default=0)


@dataclass
class RoundResult:
    """Scenario B: one round on one server (wall time up to the timeout when replies failed)."""

    target: str
    backend: str
    run: int
    spec: RoundSpec
    #: Nodes the round went to: those online, fewer than ``spec.nodes`` if some failed.
    nodes: int
    wall_seconds: float
    replies: int
    failures: dict[str, int]
    server_cpu_seconds: float
    hwm_mib: float
    #: The one PushMessages call alone (the timeout, a lower bound, when it timed out).
    push_seconds: float
    push_timed_out: bool
    #: SuperLink processes on one database (scenario D); 1 in scenario B.
    replicas: int = 1
    #: Fleet calls started from the push to the last reply, over every replica.
    calls: int = 0
    #: Each replica's CPU seconds over the round per 1,000 of those calls it served.
    replica_cpu_per_1k: list[float] = field(default_factory=list)
    #: Those calls by the replica they went to, in replica order.
    replica_calls: list[int] = field(default_factory=list)
    #: The PostgreSQL server's CPU over the round (all its processes); None without.
    database_cpu_seconds: float | None = None

    @property
    def timed_out(self) -> bool:
        """Whether replies were still missing at the timeout (the wall time is a lower bound)."""
        return MISSING in self.failures

    @property
    def reply_throughput_mb_s(self) -> float:
        """Reply bytes received per second of wall time (MB = 10^6 bytes)."""
        return self.replies * self.spec.reply_bytes / 1e6 / self.wall_seconds


@dataclass
class EdgeRound:
    """Scenario C: one round at ``factor`` x N_sat, and the idle fleet's calls meanwhile."""

    factor: float
    #: The fleet size grown to, and the nodes the round went to (those online).
    nodes: int
    online: int
    push_seconds: float
    push_timed_out: bool
    #: From the push to the last reply, or the round's timeout.
    wall_seconds: float
    replies: int
    #: Error replies by error code and replies missing at the timeout, as in scenario B.
    failures: dict[str, int]
    #: PullMessages latencies of the fleet over the round (GetNodes to the last reply).
    poll_p50_ms: float
    poll_p99_ms: float
    #: UNAVAILABLE answers the fleet got over the round: the server shedding load.
    sheds: int
    #: Every failed Fleet call over the round, by method and code ...
    fleet_errors: dict[str, int]
    #: ... and since the previous measurement, before the round: growing to ``nodes``.
    ramp_errors: dict[str, int]
    #: Nodes that gave up as a SuperNode would, since the session's server started.
    lost_nodes: int

    @classmethod
    def of(cls, factor: float, nodes: int, outcome: RoundOutcome, window: Window) -> EdgeRound:
        """The figures of a round's outcome and of the fleet's window over it."""
        pulls = sorted(window.latencies.get("PullMessages", []))
        return cls(
            factor=factor,
            nodes=nodes,
            online=outcome.nodes,
            push_seconds=outcome.push_seconds,
            push_timed_out=outcome.push_timed_out,
            wall_seconds=outcome.wall_seconds,
            replies=outcome.replies,
            failures=outcome.failures,
            poll_p50_ms=1000 * percentile(pulls, 0.5),
            poll_p99_ms=1000 * percentile(pulls, 0.99),
            sheds=sum(n for call, n in window.errors.items() if call.endswith(" UNAVAILABLE")),
            fleet_errors=dict(window.errors),
            ramp_errors=dict(window.earlier_errors),
            lost_nodes=window.lost_nodes,
        )

    @property
    def missing(self) -> int:
        """Replies still missing at the timeout: the round did not complete."""
        return self.failures.get(MISSING, 0)

    @property
    def error_codes(self) -> dict[str, int]:
        """Replies that came back as errors (say, from a node declared unavailable), by code."""
        return {key: count for key, count in self.failures.items() if key != MISSING}


@dataclass
class EdgeSession:
    """Scenario C on one server: the search for N_sat, then the rounds at the edge."""

    target: str
    backend: str
    run: int
    baseline_rss_mib: float
    #: The idle fleet sizes measured in search of N_sat, in order; the last one is N_sat.
    probes: list[IdleStep] = field(default_factory=list)
    #: Whether the last probe kept the server ``edge_busy`` (no: ``edge_max`` came first).
    saturated: bool = False
    rounds: list[EdgeRound] = field(default_factory=list)

    @property
    def n_sat(self) -> int:
        """The first size that kept the server busy enough, or the largest measured."""
        return self.probes[-1].nodes if self.probes else 0

    @property
    def sat_cpu_percent(self) -> float:
        """Server CPU (percent of one CPU) with N_sat idle nodes."""
        return self.probes[-1].server_cpu_percent if self.probes else math.nan


@dataclass
class ProfiledSession:
    """Where the first target's event loop spent its time in one session (py-spy, GIL held)."""

    scenario: str
    backend: str
    run: int
    samples: int
    #: Percent of samples inside an ECDSA signature check.
    signature_checks_pct: float
    rows: list[ProfileRow]
    #: Percent of samples inside the state (our backend or its driver, :data:`STATE_FILES`).
    state_pct: float | None = None

    @classmethod
    def of(cls, scenario: str, backend: str, run: int, summary: ProfileSummary) -> ProfiledSession:
        """The figures the report shows, from a whole sampled session."""
        return cls(
            scenario,
            backend,
            run,
            summary.samples,
            summary.share(SIGNATURE_CHECK),
            summary.rows(PROFILE_TOP),
            summary.share_in(STATE_FILES),
        )


def say(line: str) -> None:
    """Progress on stderr, so that a long ``make bench`` shows where it is."""
    print(time.strftime("%H:%M:%S"), line, file=sys.stderr, flush=True)


class Bench:
    """Runs the scenarios of ``settings`` against ``targets`` with one shared fleet."""

    def __init__(
        self,
        settings: Settings,
        targets: list[Target],
        fleet: Fleet,
        profile_dir: Path | None = None,
        postgres: PostgresServer | None = None,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.fleet = fleet
        self.profile_dir = profile_dir
        #: The server that the ``postgres`` backend and scenario D create their databases on.
        self.postgres = postgres
        self.idle: list[IdleSession] = []
        self.rounds: list[RoundResult] = []
        self.edge: list[EdgeSession] = []
        #: Scenario D: A's sessions and B's rounds, by replica count.
        self.replica_idle: list[IdleSession] = []
        self.replica_rounds: list[RoundResult] = []
        #: With ``settings.profile_last_run``: the first target's last run of each scenario.
        self.profiles: list[ProfiledSession] = []
        #: Sessions that broke off (a server that crashed, a call that failed) or were
        #: skipped for time, with why.
        self.broken: list[str] = []

    async def run_all(self) -> None:
        """Every run, backend, scenario and target, targets alternating, within the time budget.

        Scenario C runs in the first ``edge_runs`` runs only, on ``edge_backends``; D in the
        first ``replica_runs``, after the backends, with the replica counts rotating per run.
        Targets without PostgreSQL sit out its backend and D.
        """
        deadline = time.monotonic() + self.settings.time_budget
        sessions: dict[str, tuple[str, Callable[[Target, str, int], Awaitable[None]]]] = {
            "idle": ("idle fleet", self.idle_fleet),
            "round": ("one round", self.one_round),
            "edge": ("at the edge", self.at_the_edge),
        }
        for run in range(self.settings.runs):
            shift = run % len(self.targets)
            order = self.targets[shift:] + self.targets[:shift]
            for backend in self.settings.backends:
                for scenario, (title, session) in sessions.items():
                    runs = self.runs_of(scenario)
                    if not self._runs_on(scenario, backend) or run >= runs:
                        continue
                    for target in order:
                        name = f"{target.label}, {backend}, run {run + 1}/{runs}, {title}"
                        if self._serves(target, backend) and self._may_start(name, deadline):
                            with self._failure_noted(name):
                                await session(target, backend, run)
            if "replicas" in self.settings.scenarios and run < self.runs_of("replicas"):
                await self._replica_sessions(run, order, deadline)

    async def _replica_sessions(self, run: int, order: list[Target], deadline: float) -> None:
        """Scenario D's sessions of one run: A's search, then B's round, per replica count."""
        counts = self.settings.replica_counts
        counts = counts[run % len(counts) :] + counts[: run % len(counts)]
        runs = self.runs_of("replicas")
        for target in (target for target in order if target.postgres):
            for title, session in (("idle fleet", self.idle_fleet), ("one round", self.one_round)):
                for count in counts:
                    name = f"{target.label}, {_replicas(count)}, run {run + 1}/{runs}, {title}"
                    if self._may_start(name, deadline):
                        with self._failure_noted(name):
                            await session(target, "postgres", run, count)

    def runs_of(self, scenario: str) -> int:
        """How many runs ``scenario`` gets: ``edge_runs`` for C, ``replica_runs`` for D.

        Both at most ``runs``.
        """
        if scenario == "edge":
            return min(self.settings.edge_runs, self.settings.runs)
        if scenario == "replicas":
            return min(self.settings.replica_runs, self.settings.runs)
        return self.settings.runs

    def _runs_on(self, scenario: str, backend: str) -> bool:
        """Whether ``scenario`` is measured on ``backend`` at all."""
        if scenario not in self.settings.scenarios:
            return False
        return scenario != "edge" or backend in self.settings.edge_backends

    @staticmethod
    def _serves(target: Target, backend: str) -> bool:
        """Whether ``target`` can keep its state on ``backend``."""
        return backend != "postgres" or target.postgres

    def _may_start(self, name: str, deadline: float) -> bool:
        if time.monotonic() < deadline:
            say(f"{name} ...")
            return True
        self.broken.append(f"{name}: skipped, the time budget was spent")
        return False

    @contextlib.contextmanager
    def _failure_noted(self, name: str) -> Iterator[None]:
        """Let the other sessions go on when one breaks off; the report lists it."""
        try:
            yield
        except Exception as error:  # any failure of a target is a finding, not a crash
            self.broken.append(f"{name}: {error}")
            say(f"{name} broke off: {error}")

    async def idle_fleet(
        self, target: Target, backend: str, run: int, replicas: int | None = None
    ) -> None:
        """Scenario A on a fresh server, or D's search on ``replicas`` fresh ones."""
        scenario = "idle" if replicas is None else "replicas"
        with self._servers(target, backend, scenario, run, replicas or 1) as servers:
            await self.fleet.attach(servers.fleet_addresses)
            session = IdleSession(
                target.label, backend, run, servers.memory_mib()[0], replicas=replicas or 1
            )
            deadline = time.monotonic() + self.settings.idle_budget
            registered = 0
            try:
                for size in self.settings.fleet_sizes:
                    spread = self._spread(size)
                    needed = spread + self.settings.settle + self.settings.window
                    if time.monotonic() + needed > deadline:
                        session.stopped = f"time budget reached before {size} nodes"
                        break
                    step = await self._grow_and_measure(
                        servers, size, registered, session.baseline_rss_mib, REGISTER_TIMEOUT
                    )
                    registered = step.registered
                    session.steps.append(step)
                    say(
                        f"  {size} nodes: {step.rate:.0f} calls/s, p99 {step.p99_ms:.0f} ms, "
                        f"{'sustained' if step.sustained else 'NOT sustained'}"
                    )
                    if not step.sustained:
                        session.stopped = f"{size} nodes not sustained"
                        break
                else:
                    session.stopped = "every size sustained"
            finally:
                await self.fleet.detach()
        (self.idle if replicas is None else self.replica_idle).append(session)

    async def one_round(
        self, target: Target, backend: str, run: int, replicas: int | None = None
    ) -> None:
        """Scenario B on a fresh server: every round, smallest fleet first.

        A server that cannot register every node still gets its round, over the nodes it
        lists as online, as a ServerApp would do; the report shows how many there were.
        With ``replicas`` (scenario D), ``replica_round`` alone on that many servers; the
        driver talks to the first one, which created the run after all of them started.
        """
        scenario = "round" if replicas is None else "replicas"
        specs = self.settings.rounds if replicas is None else (self.settings.replica_round,)
        results = self.rounds if replicas is None else self.replica_rounds
        with self._servers(target, backend, scenario, run, replicas or 1) as servers:
            await self.fleet.attach(servers.fleet_addresses)
            try:
                async with ServerAppDriver(
                    servers.first.exec_address,
                    servers.first.serverappio_address,
                    self.settings.driver_pull_period,
                ) as driver:
                    registered = 0
                    for spec in sorted(specs, key=lambda spec: spec.nodes):
                        grown = await self.fleet.grow(
                            spec.nodes, self._spread(spec.nodes), REGISTER_TIMEOUT
                        )
                        registered += grown.created
                        if not await driver.wait_for_nodes(registered, ONLINE_TIMEOUT):
                            raise RuntimeError(f"no node of {spec.nodes} came online")
                        await asyncio.sleep(self.settings.settle)
                        cpu_before = servers.cpu_seconds()
                        database_before = servers.database_cpu_seconds()
                        start = time.monotonic()
                        outcome = await driver.round(
                            spec.payload_bytes, spec.reply_bytes, self.settings.round_timeout
                        )
                        end = time.monotonic()
                        cpu = _minus(servers.cpu_seconds(), cpu_before)
                        database = _minus_or_none(servers.database_cpu_seconds(), database_before)
                        window = await self.fleet.collect(start, end, COLLECT_GRACE)
                        say(f"  round {spec.label}: {outcome}")
                        results.append(
                            RoundResult(
                                target.label,
                                backend,
                                run,
                                spec,
                                outcome.nodes,
                                outcome.wall_seconds,
                                outcome.replies,
                                outcome.failures,
                                sum(cpu),
                                servers.memory_mib()[1],
                                outcome.push_seconds,
                                outcome.push_timed_out,
                                replicas=replicas or 1,
                                calls=sum(window.replica_calls.values()),
                                replica_cpu_per_1k=_per_1k(cpu, window.replica_calls),
                                replica_calls=_in_order(window.replica_calls, len(cpu)),
                                database_cpu_seconds=database,
                            )
                        )
            finally:
                await self.fleet.detach()

    async def at_the_edge(self, target: Target, backend: str, run: int) -> None:
        """Scenario C on a fresh server: find N_sat, then a round at each factor of it.

        The session is recorded from its start, so a failure keeps what came before it.
        """
        settings = self.settings
        wait = settings.edge_register_wait
        with self._servers(target, backend, "edge", run) as servers:
            await self.fleet.attach(servers.fleet_addresses)
            session = EdgeSession(target.label, backend, run, servers.memory_mib()[0])
            self.edge.append(session)
            try:
                async with ServerAppDriver(
                    servers.first.exec_address,
                    servers.first.serverappio_address,
                    settings.driver_pull_period,
                ) as driver:
                    registered = await self._saturate(servers, session)
                    for factor in settings.edge_factors:
                        size = max(1, round(factor * session.n_sat))
                        grown = await self.fleet.grow(size, self._spread(size), wait)
                        registered += grown.created
                        await driver.wait_for_nodes(registered, wait)
                        await asyncio.sleep(settings.settle)
                        start = time.monotonic()
                        outcome = await driver.round(
                            settings.edge_payload_bytes,
                            settings.edge_payload_bytes,
                            settings.edge_round_timeout,
                        )
                        window = await self.fleet.collect(start, time.monotonic(), COLLECT_GRACE)
                        result = EdgeRound.of(factor, size, outcome, window)
                        session.rounds.append(result)
                        say(
                            f"  round at {factor:g} x N_sat = {size} nodes: push "
                            f"{result.push_seconds:.2f} s, round {result.wall_seconds:.2f} s, "
                            f"{result.replies}/{result.online} replies, {result.sheds} sheds, "
                            f"poll p99 {result.poll_p99_ms:.0f} ms"
                        )
            finally:
                await self.fleet.detach()

    async def _saturate(self, servers: Replicas, session: EdgeSession) -> int:
        """Grow the idle fleet until the server is ``edge_busy`` or its p99 is past the limit.

        Returns the nodes registered.
        """
        registered = 0
        for size in self.settings.edge_sizes():
            step = await self._grow_and_measure(
                servers,
                size,
                registered,
                session.baseline_rss_mib,
                self.settings.edge_register_wait,
            )
            registered = step.registered
            session.probes.append(step)
            say(
                f"  {size} idle nodes: server CPU {step.server_cpu_percent:.0f} %, "
                f"p99 {step.p99_ms:.0f} ms"
            )
            busy = step.server_cpu_percent >= 100 * self.settings.edge_busy
            if busy or step.p99_ms >= 1000 * self.settings.p99_limit:
                session.saturated = True
                break
        return registered

    def _spread(self, size: int) -> float:
        return max(self.settings.min_spread, (size - self.fleet.size) / self.settings.ramp_rate)

    @contextlib.contextmanager
    def _servers(
        self, target: Target, backend: str, scenario: str, run: int, replicas: int = 1
    ) -> Iterator[Replicas]:
        """Fresh servers on one fresh state, in a scratch directory; sampled when profiling.

        ``--profile DIR`` samples every session of the first target into DIR. Otherwise,
        with ``profile_last_run``, its last run of each scenario is sampled (GIL holders
        only, at a low rate: the cost counts against that target's figures) for the report.
        Scenario D is never sampled: its figures are CPU per call, which sampling inflates.
        """
        first = target == self.targets[0] and scenario != "replicas"
        last_run = self.settings.profile_last_run and run == self.runs_of(scenario) - 1
        with (
            tempfile.TemporaryDirectory(prefix="superlink-bench-") as scratch,
            self._state(backend, Path(scratch)) as database,
        ):
            servers = Replicas(
                [
                    SuperLinkProcess(
                        target, Path(scratch) / f"replica-{index + 1}", database=database
                    )
                    for index in range(replicas)
                ],
                database_pid=self.postgres.pid if self.postgres and backend == "postgres" else None,
            )
            stacks = Path(scratch) / "stacks.txt"
            with servers, contextlib.ExitStack() as stack:
                pid = servers.first.pid
                if self.profile_dir is not None and first:
                    self.profile_dir.mkdir(parents=True, exist_ok=True)
                    output = self.profile_dir / f"{scenario}-{backend}-run{run + 1}.txt"
                    stack.enter_context(Sampler(pid, output))
                elif first and last_run and find_py_spy() is not None:
                    stack.enter_context(Sampler(pid, stacks, rate=PROFILE_RATE, gil_only=True))
                yield servers
            if stacks.exists():
                summary = ProfileSummary.read([stacks])
                self.profiles.append(ProfiledSession.of(scenario, backend, run, summary))

    @contextlib.contextmanager
    def _state(self, backend: str, scratch: Path) -> Iterator[str | None]:
        """The ``--database`` value of a session: none, a new SQLite file or a new database."""
        if backend == "memory":
            yield None
        elif backend == "sqlite":
            yield str(scratch / "state.db")
        elif self.postgres is None:
            raise RuntimeError("the postgres backend needs a PostgreSQL server")
        else:
            name = self.postgres.create_database("bench")
            try:
                yield self.postgres.url(name)
            finally:
                self.postgres.drop_database(name)

    async def _grow_and_measure(
        self,
        servers: Replicas,
        size: int,
        registered: int,
        baseline_rss: float,
        register_timeout: float,
    ) -> IdleStep:
        """Grow the fleet to ``size`` (``registered`` so far), settle, measure one window."""
        grown = await self.fleet.grow(size, self._spread(size), register_timeout)
        await asyncio.sleep(self.settings.settle)
        return await self._measure(servers, size, registered + grown.created, baseline_rss)

    async def _measure(
        self, servers: Replicas, size: int, registered: int, baseline_rss: float
    ) -> IdleStep:
        """One window over the current fleet: latencies, rates, CPU and memory."""
        start = time.monotonic()
        cpu_before, loadgen_cpu = servers.cpu_seconds(), self.fleet.cpu_seconds()
        database_cpu = servers.database_cpu_seconds()
        await asyncio.sleep(self.settings.window)
        end = time.monotonic()
        cpu = _minus(servers.cpu_seconds(), cpu_before)
        server_cpu = sum(cpu)
        database_cpu = _minus_or_none(servers.database_cpu_seconds(), database_cpu)
        loadgen_cpu = self.fleet.cpu_seconds() - loadgen_cpu
        seconds = end - start
        window = await self.fleet.collect(start, end, COLLECT_GRACE)
        rss, hwm = servers.memory_mib()
        every = sorted(latency for values in window.latencies.values() for latency in values)
        methods = {}
        for method, values in sorted(window.latencies.items()):
            values.sort()
            methods[method] = MethodStats(
                len(values), 1000 * percentile(values, 0.5), 1000 * percentile(values, 0.99)
            )
        calls = len(every) + sum(window.errors.values())
        p99 = percentile(every, 0.99)
        return IdleStep(
            nodes=size,
            registered=registered,
            connections=self.fleet.connections,
            seconds=seconds,
            calls=calls,
            rate=calls / seconds,
            p50_ms=1000 * percentile(every, 0.5),
            p99_ms=1000 * p99,
            methods=methods,
            errors=dict(window.errors),
            ramp_errors=dict(window.earlier_errors),
            lost_nodes=window.lost_nodes,
            server_cpu_per_1k=1000 * server_cpu / calls if calls else math.nan,
            server_cpu_percent=100 * server_cpu / seconds,
            rss_mib=rss,
            hwm_mib=hwm,
            rss_per_1k_nodes_mib=(rss - baseline_rss) / (size / 1000),
            loadgen_cpu_percent=100 * loadgen_cpu / seconds,
            loadgen_lag_p99_ms=1000 * percentile(sorted(window.loop_lags), 0.99),
            sustained=(
                registered == size
                and not window.errors
                and not window.lost_nodes
                and p99 < self.settings.p99_limit
            ),
            replica_cpu_per_1k=_per_1k(cpu, window.replica_calls),
            replica_calls=_in_order(window.replica_calls, len(cpu)),
            database_cpu_per_1k=(
                1000 * database_cpu / calls if calls and database_cpu is not None else None
            ),
        )


def _minus(after: list[float], before: list[float]) -> list[float]:
    return [late - early for late, early in zip(after, before, strict=True)]


def _in_order(calls: Counter[int], replicas: int) -> list[int]:
    return [calls[index] for index in range(replicas)]


def _minus_or_none(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _per_1k(cpu: list[float], calls: Counter[int]) -> list[float]:
    """Each replica's CPU seconds per 1,000 of the calls it served (NaN: it served none)."""
    return [
        1000 * used / calls[index] if calls[index] else math.nan for index, used in enumerate(cpu)
    ]


def _replicas(count: int) -> str:
    return f"{count} replica" if count == 1 else f"{count} replicas"
