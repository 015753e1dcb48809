"""Render a benchmark run as Markdown: machine, versions, command, the goals, every table.

Every figure is the median over runs with [min-max]; ratios are target / baseline of
the medians, and for PostgreSQL, ours on it / each target on SQLite. The file is regenerated
by the tool on every run and never edited by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.config import FULL, KB, MB, RoundSpec, Settings
from benchmarks.loadgen import offered_rate
from benchmarks.profiling import ProfileRow, profile_table
from benchmarks.scenarios import (
    STATE_FILES,
    EdgeRound,
    EdgeSession,
    IdleSession,
    IdleStep,
    MethodStats,
    ProfiledSession,
    RoundResult,
)
from benchmarks.stats import Ratio, Spread, ratio
from benchmarks.superlink import Target
from superlink_async.testing.postgres import PostgresUnavailableError, find_bindir

_PACKAGES = (
    "superlink-async",
    "flwr",
    "grpcio",
    "grpclib",
    "h2",
    "protobuf",
    "cryptography",
    "aiosqlite",
    "asyncpg",
    "uvloop",
)
#: Scenario D's projection: a replica with a CPU of its own serves idle nodes until this
#: share of it is busy (scenario C's saturation).
_PROJECTED_BUSY = 0.9
#: The issue's goal for two replicas, each with a CPU of its own, over one.
_REPLICA_GOAL = 1.8


@dataclass
class Results:
    """Everything one benchmark run produced, with what it ran on."""

    command: str
    started: str
    seconds: float
    machine: dict[str, str]
    versions: dict[str, str]
    settings: Settings
    targets: list[Target]
    baseline: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    idle: list[IdleSession]
    rounds: list[RoundResult]
    edge: list[EdgeSession]
    broken: list[str]
    profiles: list[ProfiledSession]
    #: Scenario D: the idle sessions and rounds on one and more replicas.
    replica_idle: list[IdleSession] = field(default_factory=list)
    replica_rounds: list[RoundResult] = field(default_factory=list)

    def to_json(self) -> str:
        """The raw results, for analysis beyond the tables."""
        return json.dumps(dataclasses.asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> Results:
        """Results written by :meth:`to_json`, to render again without measuring again."""
        raw = json.loads(text)
        settings = raw["settings"]
        settings.update(
            backends=tuple(settings["backends"]),
            scenarios=tuple(settings.get("scenarios", ("idle", "round"))),
            fleet_sizes=tuple(settings["fleet_sizes"]),
            rounds=tuple(RoundSpec(**spec) for spec in settings["rounds"]),
        )
        settings.setdefault("profile_last_run", False)  # written before profiles existed
        for name in (f.name for f in dataclasses.fields(Settings) if f.name.startswith("edge_")):
            settings.setdefault(name, getattr(FULL, name))  # before scenario C: never used
        settings["edge_factors"] = tuple(settings["edge_factors"])
        settings["edge_backends"] = tuple(settings["edge_backends"])
        settings.setdefault("replica_runs", 0)  # written before scenario D
        settings["replica_counts"] = tuple(settings.get("replica_counts", FULL.replica_counts))
        replica_round = settings.get("replica_round")
        settings["replica_round"] = (
            RoundSpec(**replica_round) if replica_round else FULL.replica_round
        )
        profiles = [
            ProfiledSession(**{**p, "rows": [ProfileRow(**row) for row in p["rows"]]})
            for p in raw.get("profiles", [])
        ]
        idle = _idle_sessions(raw["idle"])
        edge = [
            EdgeSession(
                **{
                    **session,
                    "probes": _idle_steps(session["probes"]),
                    "rounds": [EdgeRound(**result) for result in session["rounds"]],
                }
            )
            for session in raw.get("edge", [])
        ]
        rounds = _round_results(raw["rounds"])
        return cls(
            **{
                **raw,
                "settings": Settings(**settings),
                "targets": [
                    Target(t["label"], tuple(t["command"]), t.get("postgres", True))
                    for t in raw["targets"]
                ],
                "load_before": tuple(raw["load_before"]),
                "load_after": tuple(raw["load_after"]),
                "idle": idle,
                "rounds": rounds,
                "edge": edge,
                "profiles": profiles,
                "replica_idle": _idle_sessions(raw.get("replica_idle", [])),
                "replica_rounds": _round_results(raw.get("replica_rounds", [])),
            }
        )


_SCENARIO_NAMES = {"idle": "Idle fleet", "round": "One round", "edge": "At the edge"}
_NO_POSTGRES = "n/a: {label} has no PostgreSQL"


def _idle_sessions(sessions: list[dict[str, Any]]) -> list[IdleSession]:
    """Idle sessions as :meth:`Results.to_json` wrote them."""
    return [
        IdleSession(**{**session, "steps": _idle_steps(session["steps"])}) for session in sessions
    ]


def _round_results(rounds: list[dict[str, Any]]) -> list[RoundResult]:
    """Rounds as :meth:`Results.to_json` wrote them."""
    return [
        RoundResult(
            **{
                "push_seconds": math.nan,  # written before pushes were timed
                "push_timed_out": False,
                **r,
                "spec": RoundSpec(**r["spec"]),
            }
        )
        for r in rounds
    ]


def _idle_steps(steps: list[dict[str, Any]]) -> list[IdleStep]:
    """Idle steps as :meth:`Results.to_json` wrote them (JSON: any value)."""
    return [IdleStep(**{**step, "methods": _method_stats(step["methods"])}) for step in steps]


def _method_stats(methods: dict[str, dict[str, float]]) -> dict[str, MethodStats]:
    return {
        name: MethodStats(int(stats["calls"]), stats["p50_ms"], stats["p99_ms"])
        for name, stats in methods.items()
    }


def machine() -> dict[str, str]:
    """CPU count and model, memory, kernel and the descriptor limit in force."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": model,
        "RAM": f"{mem_kib / 1024**2:.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL server": _postgres_version(),
        "open files limit": str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
        "state files in": _filesystem(Path(tempfile.gettempdir())),
        "commit": _commit(),
    }


def _postgres_version() -> str:
    """The version of the PostgreSQL server binaries the bench would start."""
    try:
        postgres = find_bindir() / "postgres"
        return subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (PostgresUnavailableError, OSError, subprocess.CalledProcessError):
        return "not found"


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _filesystem(path: Path) -> str:
    """``path (type)``: SQLite on tmpfs would hide the cost of its writes."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fstype, *_ = line.split()
        inside = path.resolve().is_relative_to(mount_point)
        if inside and len(mount_point) > len(best):
            best, kind = mount_point, fstype
    return f"{path} ({kind})"


def _commit() -> str:
    """The checked-out commit, marked when the work tree has changes (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


@dataclass(frozen=True)
class Goal:
    """A bound on ``target / baseline`` set by the issue, e.g. ``>= 2`` or ``< 1`` (ahead)."""

    op: str
    bound: float

    def verdict(self, measured: Ratio) -> str:
        """``yes``/``no``; ``?`` when a bound cannot decide; ``-`` without a ratio."""
        if math.isnan(measured.value):
            return "-"
        value, bound = measured.value, self.bound
        met = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}
        if measured.kind == "=":
            return "yes" if met[self.op] else "no"
        # A bound (a side timed out) decides only when it points the way the goal does.
        same_way = measured.kind[0] == self.op[0]
        if met[self.op] and same_way:
            return "yes"
        return "no" if not met[self.op] and not same_way else "?"

    def __str__(self) -> str:
        return f"{self.op} {self.bound:.3g}x"


# --- formatting ------------------------------------------------------------------------------


def _fmt(spread: Spread | None, digits: int = 1) -> str:
    if spread is None:
        return "-"
    if spread.runs == 1 or spread.low == spread.high:
        return f"{spread.median:,.{digits}f}"
    return f"{spread.median:,.{digits}f} [{spread.low:,.{digits}f}-{spread.high:,.{digits}f}]"


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- the report ------------------------------------------------------------------------------


class Report:
    """Markdown for one :class:`Results`."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.labels = [target.label for target in results.targets]
        self.others = [label for label in self.labels if label != results.baseline]
        self.compared = len(self.labels) > 1

    def render(self) -> str:
        """The whole document."""
        parts = [
            self._header(),
            self._goals(),
            self._postgres_goals(),
            self._idle_tables(),
            self._round_tables(),
            self._edge_tables(),
            self._replica_tables(),
            self._profiles(),
            self._method(),
        ]
        return "\n\n".join(part for part in parts if part) + "\n"

    # profiles

    def _profiles(self) -> str:
        profiles = self.results.profiles
        if not profiles:
            return ""
        lines = [
            f"## Where `{self.results.targets[0].label}` spends its time",
            "",
            "py-spy sampled it during its last run of each scenario (`--gil --nonblocking`, "
            "50 Hz): only the thread holding the GIL counts, so the shares are of the Python "
            "work that competes for the event loop. The sampler ran on the same CPUs, and "
            "its cost counts against this target's figures above. `own %`: samples in the "
            "function itself; `total %`: samples with it on the stack.",
        ]
        for profile in profiles:
            lines += [
                "",
                f"### {_SCENARIO_NAMES[profile.scenario]}, {profile.backend} "
                f"(run {profile.run + 1}, {profile.samples} samples)",
                "",
                f"ECDSA signature checks (`is_signed_by`): {profile.signature_checks_pct:.1f} % "
                f"of the samples; the state (our backend and its driver): "
                f"{_percent(profile.state_pct)}.",
                "",
                profile_table(profile.rows),
            ]
        return "\n".join(lines)

    # header

    def _header(self) -> str:
        r = self.results
        lines = [
            "# Benchmarks",
            "",
            "Generated by the benchmark tool (`make bench` runs the command below); do not edit by "
            "hand. Every figure is the median of the runs with [min-max]"
            + (f"; ratios divide the medians by `{r.baseline}`'s. " if self.compared else ". ")
            + "The machine may have been shared with other work while this ran: compare the "
            "load averages below and read ratios rather than absolute numbers.",
            "",
            f"- Command: `{r.command}`",
            f"- Started {r.started}, took {r.seconds / 60:.1f} min; load average "
            f"{_loads(r.load_before)} before, {_loads(r.load_after)} after",
            f"- Runs: {r.settings.runs} per backend and target; load-generator processes: "
            f"{r.settings.workers}",
        ]
        lines += [f"- `{t.label}`: `{' '.join(t.command)}` + the flags below" for t in r.targets]
        lines += [
            "- Flags: `--insecure --isolation process --exec-api-address … "
            "--serverappio-api-address … --fleet-api-address … --storage-dir …` "
            "and, for the `sqlite` backend, `--database <file>`; for `postgres`, "
            "`--database postgresql://…` of a new database per session on a PostgreSQL server "
            "the tool started on loopback with its defaults (fsync on)",
            "",
            _table(["machine", ""], [[key, value] for key, value in r.machine.items()]),
            "",
            _table(["package", "version"], [[key, value] for key, value in r.versions.items()]),
        ]
        if r.broken:
            lines += ["", "Sessions that broke off or were skipped:", ""]
            lines += [f"- {line}" for line in r.broken]
        return "\n".join(lines)

    # goals

    def _goals(self) -> str:
        rows: list[list[str]] = []
        # PostgreSQL has its own table: the reference has none to divide by.
        backends = [b for b in self.results.settings.backends if b != "postgres"]
        for backend in backends if "idle" in self.results.settings.scenarios else ():
            rows.append(
                self._goal_row(
                    f"Idle fleet: largest N with p99 < {self._limit_ms()} ms",
                    backend,
                    {label: self._largest(backend, label) for label in self.labels},
                    Goal(">=", 2),
                    digits=0,
                )
            )
        rounds = self._round_specs()
        typical = RoundSpec(1000, 100 * KB, 100 * KB)
        for backend, bound in (("sqlite", 0.5), ("memory", 0.8)):
            if typical in rounds and backend in backends:
                rows.append(
                    self._goal_row(
                        f"One round {typical.label}: wall s",
                        backend,
                        self._round_figure(typical, backend, _wall),
                        Goal("<=", bound),
                        digits=2,
                        at_least=self._timed_out(typical, backend),
                    )
                )
        large = RoundSpec(10, 10 * MB, 10 * MB)
        for backend in backends:
            if large in rounds:
                rows.append(
                    self._goal_row(
                        f"One round {large.label}: reply MB/s",
                        backend,
                        self._round_figure(large, backend, _throughput),
                        Goal(">=", 0.8),
                    )
                )
        for backend in backends:
            size = self._common_size(backend)
            if size:
                figure = {
                    label: Spread.of(
                        step.rss_per_1k_nodes_mib for step in self._steps(backend, label, size)
                    )
                    for label in self.labels
                }
                rows.append(
                    self._goal_row(
                        f"RSS per 1,000 idle nodes at {size:,} nodes, MiB",
                        backend,
                        figure,
                        Goal("<=", 1),
                    )
                )
        rows += self._edge_goals()
        header = ["figure", "backend", *self.labels]
        notes = []
        if self.compared:
            header += [f"{label} / {self.results.baseline}" for label in self.others]
            header += ["goal", "met"]
            unmet: dict[tuple[str, str], list[str]] = {}
            for row in rows:
                if row[-1] != "yes":
                    unmet.setdefault((_scenario_of(row[0]), row[1]), []).append(row[0])
            notes = [
                self._unmet(scenario, figures, backend)
                for (scenario, backend), figures in unmet.items()
            ]
        notes += self._unsaturated()
        return "\n\n".join(["## Against the issue's goals", _table(header, rows), *notes])

    def _unsaturated(self) -> list[str]:
        """Scenario C's goals are not at the edge for a session that never got busy enough."""
        busy = 100 * self.results.settings.edge_busy
        return [
            f"**Not at the edge: `{session.target}` ({session.backend}, run {session.run + 1})** "
            f"was {session.sat_cpu_percent:.0f} % busy with {session.n_sat:,} idle nodes, the "
            f"largest size: its N_sat rows are below saturation ({busy:g} % of one CPU)."
            for session in self.results.edge
            if session.probes and not session.saturated
        ]

    def _unmet(self, scenario: str, figures: list[str], backend: str) -> str:
        """For a scenario's goals not shown met: where the first target's time went, what helps."""
        text = f"**Not shown met: {'; '.join(figures)} ({backend}).**"
        profile = next(
            (p for p in self.results.profiles if (p.scenario, p.backend) == (scenario, backend)),
            None,
        )
        if profile is None:
            return text + " This run took no profile of that scenario."
        text += (
            f" In the profile of `{self.labels[0]}` below, ECDSA signature checks take "
            f"{profile.signature_checks_pct:.0f} % of its event loop's time; every call of a "
            "1.18 SuperNode is signed and the reference checks it too."
        )
        size = self._common_size(backend) if scenario == "idle" else 0
        if size:
            cpu = {
                label: _fmt(
                    Spread.of(s.server_cpu_per_1k for s in self._steps(backend, label, size))
                )
                for label in self.labels
            }
            text += f" Server CPU per 1,000 calls at {size:,} nodes: " + ", ".join(
                f"`{label}` {value} s" for label, value in cpu.items()
            )
            text += "."
        return text + (
            " More on one event loop needs those checks on CPUs of their own "
            "(`--signature-workers`, on by default with 4 or more CPUs); this machine has "
            f"{self.results.machine.get('nproc', '?')}, shared with the load generator."
        )

    def _goal_row(
        self,
        figure: str,
        backend: str,
        spreads: dict[str, Spread | None],
        goal: Goal,
        *,
        digits: int = 1,
        at_least: frozenset[str] = frozenset(),
    ) -> list[str]:
        """``at_least``: labels whose figure is a lower bound (a round that timed out)."""
        row = [figure, backend]
        for label in self.labels:
            row.append(_fmt(spreads[label], digits) + (" (timed out)" if label in at_least else ""))
        if self.compared:
            ratios = [self._ratio(spreads, label, at_least) for label in self.others]
            row += [str(value) for value in ratios]
            row += [str(goal), ", ".join(goal.verdict(value) for value in ratios)]
        return row

    def _ratio(
        self, spreads: dict[str, Spread | None], label: str, at_least: frozenset[str]
    ) -> Ratio:
        baseline = self.results.baseline
        return Ratio.of(
            spreads[label],
            spreads[baseline],
            value_at_least=label in at_least,
            baseline_at_least=baseline in at_least,
        )

    def _edge_goals(self) -> list[list[str]]:
        """Per backend and factor: the round completes, pushes and ends in time, loses no node."""
        rows: list[list[str]] = []
        for backend in self.results.settings.backends:
            for factor in self._edge_factors(backend):
                at = f"{_SCENARIO_NAMES['edge']}, {_factor_label(factor)}"
                figure = functools.partial(self._edge_figure, backend, factor)
                rows += [
                    self._absolute_row(
                        f"{at}: replies missing at the timeout",
                        backend,
                        figure(lambda r: r.missing),
                    ),
                    self._goal_row(
                        f"{at}: push s",
                        backend,
                        figure(lambda r: r.push_seconds),
                        Goal("<=", 1),
                        digits=2,
                        at_least=self._edge_bounded(backend, factor, lambda r: r.push_timed_out),
                    ),
                    self._goal_row(
                        f"{at}: round s",
                        backend,
                        figure(lambda r: r.wall_seconds),
                        Goal("<=", 0.8),
                        digits=2,
                        at_least=self._edge_bounded(backend, factor, lambda r: r.missing > 0),
                    ),
                    self._absolute_row(
                        f"{at}: nodes lost", backend, figure(lambda r: r.lost_nodes)
                    ),
                ]
        return rows

    def _absolute_row(
        self, figure: str, backend: str, spreads: dict[str, Spread | None]
    ) -> list[str]:
        """A goal on the figure itself, not a ratio: zero in every run of each target."""
        row = [figure, backend, *(_fmt(spreads[label], 0) for label in self.labels)]
        if self.compared:
            row += ["-"] * len(self.others)
            verdicts = [_zero_verdict(spreads[label]) for label in self.others]
            row += ["= 0", ", ".join(verdicts)]
        return row

    # scenario A

    def _idle_tables(self) -> str:
        settings = self.results.settings
        if "idle" not in settings.scenarios:
            return ""
        parts = [
            "## A. Idle fleet",
            "",
            f"Fleet sizes {', '.join(f'{n:,}' for n in settings.fleet_sizes)} are grown in turn on "
            f"one server; each is measured for {settings.window:g} s after a {settings.settle:g} s "
            f"settle, and the next size follows only if this one was sustained (every node "
            f"registered and stayed, no failed call, p99 of all calls < {self._limit_ms()} ms). "
            f"Sessions stop after {settings.idle_budget:g} s. `CPU s/1k` is the server's CPU "
            "seconds per 1,000 calls; `RSS/1k` is its RSS growth over the empty server per "
            "1,000 nodes; `lag p99` is how late the load generator's event loops woke up "
            "(large values mean the generator, not the server, added latency); `ramp errors` "
            "are failed calls while the size was being reached; a node is lost when it gives up "
            "as a 1.18 SuperNode would (any error but UNAVAILABLE, which it retries, and, once "
            "registered, PERMISSION_DENIED, after which it pulls again).",
        ]
        for backend in settings.backends:
            parts += ["", f"### {backend}", "", self._largest_table(backend), ""]
            parts += self._absent(backend)
            rows = []
            for size in settings.fleet_sizes:
                for label in self.labels:
                    steps = self._steps(backend, label, size)
                    if steps:
                        rows.append(self._idle_row(size, label, steps))
            parts.append(
                _table(
                    [
                        "nodes",
                        "target",
                        "sustained",
                        "conns",
                        "calls/s",
                        "p50 ms",
                        "p99 ms",
                        "CPU s/1k",
                        "server CPU %",
                        "RSS MiB",
                        "RSS/1k MiB",
                        "loadgen CPU %",
                        "lag p99 ms",
                        "errors",
                        "ramp errors",
                        "nodes lost",
                    ],
                    rows,
                )
            )
            parts += ["", self._method_table(backend)]
        return "\n".join(parts)

    def _absent(self, backend: str) -> list[str]:
        """A line naming the targets that cannot run on ``backend`` (the reference: PostgreSQL)."""
        absent = [label for label in self.labels if not self._serves(label, backend)]
        if not absent:
            return []
        return [", ".join(f"`{label}`: {_NO_POSTGRES.format(label=label)}" for label in absent), ""]

    def _serves(self, label: str, backend: str) -> bool:
        return backend != "postgres" or self._target(label).postgres

    def _target(self, label: str) -> Target:
        return next(target for target in self.results.targets if target.label == label)

    def _largest_table(self, backend: str) -> str:
        rows = []
        for label in (label for label in self.labels if self._serves(label, backend)):
            sessions = self._sessions(backend, label)
            why = "; ".join(sorted({session.stopped for session in sessions}))
            rows.append([label, _fmt(self._largest(backend, label), 0), why])
        return _table(["target", f"largest N with p99 < {self._limit_ms()} ms", "stopped"], rows)

    def _idle_row(self, size: int, label: str, steps: list[IdleStep]) -> list[str]:
        def spread(pick: Callable[[IdleStep], float]) -> Spread | None:
            return Spread.of(pick(step) for step in steps)

        return [
            f"{size:,}",
            label,
            f"{sum(step.sustained for step in steps)}/{len(steps)}",
            _fmt(spread(lambda s: s.connections), 0),
            _fmt(spread(lambda s: s.rate), 0),
            _fmt(spread(lambda s: s.p50_ms)),
            _fmt(spread(lambda s: s.p99_ms)),
            _fmt(spread(lambda s: s.server_cpu_per_1k), 2),
            _fmt(spread(lambda s: s.server_cpu_percent), 0),
            _fmt(spread(lambda s: s.rss_mib), 0),
            _fmt(spread(lambda s: s.rss_per_1k_nodes_mib)),
            _fmt(spread(lambda s: s.loadgen_cpu_percent), 0),
            _fmt(spread(lambda s: s.loadgen_lag_p99_ms)),
            _counts(sum((Counter(step.errors) for step in steps), Counter())),
            _counts(sum((Counter(step.ramp_errors) for step in steps), Counter())),
            str(sum(step.lost_nodes for step in steps)),
        ]

    def _method_table(self, backend: str) -> str:
        methods = sorted(
            {
                method
                for session in self.results.idle
                if session.backend == backend
                for step in session.steps
                for method in step.methods
            }
        )
        rows = []
        for size in self.results.settings.fleet_sizes:
            for label in self.labels:
                steps = self._steps(backend, label, size)
                if not steps:
                    continue
                cells = []
                for method in methods:
                    stats = [step.methods[method] for step in steps if method in step.methods]
                    p50 = Spread.of(s.p50_ms for s in stats)
                    p99 = Spread.of(s.p99_ms for s in stats)
                    cells.append("-" if p50 is None else f"{_fmt(p50)} / {_fmt(p99)}")
                rows.append([f"{size:,}", label, *cells])
        header = ["nodes", "target", *(f"{method} p50 / p99 ms" for method in methods)]
        return "Per method:\n\n" + _table(header, rows)

    # scenario B

    def _round_tables(self) -> str:
        settings = self.results.settings
        if "round" not in settings.scenarios:
            return ""
        parts = [
            "## B. One round",
            "",
            "One run per server, claimed over ServerAppIo; for each round the fleet grows to the "
            "round's size (`nodes`: how many were online; fewer when some could not register), "
            "then one PushMessages carries an instruction per online node (the model: "
            "an array as large as the reply) and the driver pulls every "
            f"{settings.driver_pull_period:g} s until every reply is in. Wall time runs from the "
            "push to the last reply, so it includes up to one 3 s pull period of the nodes; "
            f"when replies were still missing after {settings.round_timeout:g} s it is that "
            "timeout, a lower bound: such cells say `(timed out)` and their ratios are bounds. "
            "`push s` is the PushMessages call alone (bounded by the same timeout); "
            "`reply MB/s` = reply bytes / wall time; `CPU s` is the server's CPU during the "
            "round, the figure the pull period does not blur.",
        ]
        for backend in settings.backends:
            rows = []
            for spec in sorted(self._round_specs(), key=lambda spec: spec.nodes):
                walls = self._round_figure(spec, backend, _wall)
                timed_out = self._timed_out(spec, backend)
                for label in self.labels:
                    results = self._rounds(spec, backend, label)
                    if not results:
                        continue
                    rows.append(
                        [
                            spec.label,
                            label,
                            _fmt(Spread.of(r.nodes for r in results), 0),
                            _fmt(Spread.of(r.push_seconds for r in results), 2)
                            + (" (timed out)" if any(r.push_timed_out for r in results) else ""),
                            _fmt(walls[label], 2) + (" (timed out)" if label in timed_out else ""),
                            str(self._ratio(walls, label, timed_out)) if self.compared else "-",
                            _fmt(Spread.of(r.reply_throughput_mb_s for r in results)),
                            _fmt(Spread.of(r.server_cpu_seconds for r in results), 2),
                            _fmt(Spread.of(r.hwm_mib for r in results), 0),
                            _counts(sum((Counter(r.failures) for r in results), Counter())),
                        ]
                    )
            header = ["round", "target", "nodes", "push s", "wall s", "wall ratio", "reply MB/s"]
            header += ["CPU s", "peak RSS MiB", "failed replies"]
            parts += ["", f"### {backend}", "", *self._absent(backend), _table(header, rows)]
        return "\n".join(parts)

    # scenario C

    def _edge_tables(self) -> str:
        settings = self.results.settings
        if "edge" not in settings.scenarios:
            return ""
        sizes = settings.edge_sizes()
        factors = ", ".join(_factor_label(factor) for factor in settings.edge_factors)
        parts = [
            "## C. At the edge",
            "",
            f"One server per session, {_plural(self._edge_runs(), 'run')} per backend and "
            f"target (the other scenarios: {settings.runs}). The idle fleet "
            f"grows through {', '.join(f'{n:,}' for n in sizes)} nodes; after each size "
            f"(a {settings.settle:g} s settle) the server's CPU is measured over "
            f"{settings.window:g} s, until idle polling alone keeps it at least "
            f"{100 * settings.edge_busy:g} % of one CPU busy: that size is N_sat (`max reached` "
            f"when {settings.edge_max:,} came first). Then, at {factors}, the fleet grows to "
            f"that size (nodes get {settings.edge_register_wait:g} s to register and show in "
            "GetNodes: a 1.18 SuperNode retries an UNAVAILABLE CreateNode for ever) and a round "
            "runs as flwr's grid does: GetNodes, one PushMessages with a "
            f"{_size(settings.edge_payload_bytes)} instruction per online node, pulls every "
            f"{settings.driver_pull_period:g} s until every "
            f"{_size(settings.edge_payload_bytes)} reply is in or "
            f"{settings.edge_round_timeout:g} s have passed since the push (the push "
            "included; `(timed out)` marks a lower bound). `push s` is the PushMessages call "
            "alone; `poll p50/p99` are the fleet's PullMessages latencies over the round; "
            "`sheds` the UNAVAILABLE answers the fleet got meanwhile; `nodes lost` those that "
            "gave up as a 1.18 SuperNode would, since the server started. Each target runs at "
            "its own N_sat.",
        ]
        for backend in settings.backends:
            sessions = [s for s in self.results.edge if s.backend == backend]
            if not sessions:
                continue
            parts += ["", f"### {backend}", "", self._search_table(sessions), "", ""]
            rows = []
            for label in self.labels:
                for factor in self._edge_factors(backend):
                    row = self._edge_row(backend, label, factor)
                    if row:
                        rows.append(row)
            header = ["target", "at", "N", "online", "idle CPU % at N_sat", "push s", "round s"]
            header += ["replies", "error replies", "missing", "poll p50 ms", "poll p99 ms"]
            header += ["sheds", "nodes lost"]
            parts[-1] = _table(header, rows)
        return "\n".join(parts)

    def _search_table(self, sessions: list[EdgeSession]) -> str:
        rows = [
            [
                session.target,
                str(session.run + 1),
                ", ".join(
                    f"{step.nodes:,}: {step.server_cpu_percent:.0f} %" for step in session.probes
                ),
                f"{session.n_sat:,}" + ("" if session.saturated else " (max reached)"),
            ]
            for label in self.labels
            for session in sessions
            if session.target == label
        ]
        return _table(["target", "run", "idle nodes: server CPU", "N_sat"], rows)

    def _edge_row(self, backend: str, label: str, factor: float) -> list[str]:
        results = self._edge_rounds(backend, label, factor)
        if not results:
            return []
        sessions = self._edge_sessions(backend, label)
        unsaturated = sum(not session.saturated for session in sessions)
        reached = (
            ""
            if not unsaturated
            else " (max reached)"
            if unsaturated == len(sessions)
            else f" (max reached in {unsaturated} of {len(sessions)} runs)"
        )

        def spread(pick: Callable[[EdgeRound], float]) -> Spread | None:
            return Spread.of(pick(result) for result in results)

        def bounded(flag: Callable[[EdgeRound], bool]) -> str:
            return " (timed out)" if any(flag(result) for result in results) else ""

        errors = sum((Counter(result.error_codes) for result in results), Counter())
        return [
            label,
            _factor_label(factor),
            _fmt(spread(lambda r: r.nodes), 0),
            _fmt(spread(lambda r: r.online), 0),
            _fmt(Spread.of(session.sat_cpu_percent for session in sessions), 0) + reached,
            _fmt(spread(lambda r: r.push_seconds), 2) + bounded(lambda r: r.push_timed_out),
            _fmt(spread(lambda r: r.wall_seconds), 2) + bounded(lambda r: r.missing > 0),
            _fmt(spread(lambda r: r.replies), 0),
            _counts(errors),
            _fmt(spread(lambda r: r.missing), 0),
            _fmt(spread(lambda r: r.poll_p50_ms)),
            _fmt(spread(lambda r: r.poll_p99_ms)),
            _fmt(spread(lambda r: r.sheds), 0),
            _fmt(spread(lambda r: r.lost_nodes), 0),
        ]

    # PostgreSQL against SQLite

    def _postgres_goals(self) -> str:
        """Ours on PostgreSQL against ours and the reference on SQLite: the issue's targets."""
        settings = self.results.settings
        if not {"postgres", "sqlite"} <= set(settings.backends):
            return ""
        parts = [
            "## PostgreSQL against SQLite",
            "",
            "The issue's targets for the `postgres` backend: idle fleet and round times within "
            "1.5x of our SQLite figures, and ahead of the reference's SQLite. "
            + " ".join(
                f"`{label}` runs no `postgres` rows ({_NO_POSTGRES.format(label=label)}): "
                "its SQLite figures are the comparison."
                for label in self.labels
                if not self._serves(label, "postgres")
            ),
        ]
        for label in (label for label in self.labels if self._serves(label, "postgres")):
            parts += ["", *self._postgres_table(label)]
        return "\n".join(parts)

    def _postgres_table(self, label: str) -> list[str]:
        """The goals table of ``label`` on PostgreSQL, then a note per scenario missing one."""
        others = [other for other in self.labels if other != label]
        columns = [(label, "postgres"), (label, "sqlite"), *((o, "sqlite") for o in others)]
        within, ahead_n, ahead_t = Goal(">=", 1 / 1.5), Goal(">", 1), Goal("<", 1)
        rows: list[list[str]] = []
        missed: dict[str, list[str]] = {}

        def add(
            figure: str,
            spreads: dict[tuple[str, str], Spread | None],
            goals: tuple[Goal | None, Goal | None],
            digits: int,
            at_least: frozenset[tuple[str, str]] = frozenset(),
        ) -> None:
            row = [figure]
            for column in columns:
                bounded = " (timed out)" if column in at_least else ""
                row.append(_fmt(spreads[column], digits) + bounded)
            ours = spreads[(label, "postgres")]
            for index, column in enumerate(columns[1:]):
                goal = goals[0 if index == 0 else 1]
                measured = Ratio.of(
                    ours,
                    spreads[column],
                    value_at_least=(label, "postgres") in at_least,
                    baseline_at_least=column in at_least,
                )
                verdict = goal.verdict(measured) if goal else "-"
                row += [str(measured), str(goal) if goal else "-", verdict]
                if verdict not in ("yes", "-"):
                    missed.setdefault(_scenario_of(figure), []).append(figure)
            rows.append(row)

        if "idle" in self.results.settings.scenarios:
            add(
                f"Idle fleet: largest N with p99 < {self._limit_ms()} ms",
                {(who, backend): self._largest(backend, who) for who, backend in columns},
                (within, ahead_n),
                0,
            )
        for spec in sorted(self._round_specs(), key=lambda spec: spec.nodes):
            walls = {
                (who, backend): self._round_figure(spec, backend, _wall)[who]
                for who, backend in columns
            }
            bounded = {
                (who, backend) for who, backend in columns if who in self._timed_out(spec, backend)
            }
            within_time = Goal("<=", 1.5)
            add(
                f"One round {spec.label}: wall s",
                walls,
                (within_time, ahead_t),
                2,
                frozenset(bounded),
            )
        size = self._shared_size(columns)
        if size:
            for figure, pick in (
                (f"RSS per 1,000 idle nodes at {size:,} nodes, MiB", _rss_per_1k),
                (f"Server CPU s per 1,000 calls at {size:,} idle nodes", _cpu_per_1k),
            ):
                add(
                    figure,
                    {
                        (who, backend): Spread.of(pick(s) for s in self._steps(backend, who, size))
                        for who, backend in columns
                    },
                    (None, None),
                    2,
                )
        header = ["figure", *(f"{who} {backend}" for who, backend in columns)]
        for who, backend in columns[1:]:
            header += [f"/ {who} {backend}", "goal", "met"]
        notes = [
            self._postgres_unmet(label, scenario, figures) for scenario, figures in missed.items()
        ]
        return [_table(header, rows), *(f"\n{note}" for note in notes)]

    def _shared_size(self, columns: list[tuple[str, str]]) -> int:
        """The largest idle fleet size that every (target, backend) of ``columns`` measured."""
        return max(
            (
                size
                for size in self.results.settings.fleet_sizes
                if all(self._steps(backend, label, size) for label, backend in columns)
            ),
            default=0,
        )

    def _postgres_unmet(self, label: str, scenario: str, figures: list[str]) -> str:
        """Where ``label``'s time went on PostgreSQL, for the goals it missed in ``scenario``."""
        text = f"**Not shown met on PostgreSQL: {'; '.join(dict.fromkeys(figures))}.**"
        profiles = {p.backend: p for p in self.results.profiles if p.scenario == scenario}
        postgres, sqlite = profiles.get("postgres"), profiles.get("sqlite")
        if postgres is not None and label == self.labels[0]:
            text += (
                f" In the profile of `{label}` below, the state (our backend and its driver: "
                f"{', '.join(f'`{f}`' for f in STATE_FILES)}) is on the event loop's stack in "
                f"{_percent(postgres.state_pct)} of the samples on PostgreSQL"
                + (f" against {_percent(sqlite.state_pct)} on SQLite" if sqlite else "")
                + f", ECDSA signature checks in {postgres.signature_checks_pct:.0f} %; its "
                "busiest functions: "
                + ", ".join(f"`{row.function}` {row.own_pct:.0f} %" for row in postgres.rows[:3])
                + "."
            )
        size = self._shared_size([(label, "postgres"), (label, "sqlite")])
        if scenario == "idle" and size:
            ours = {
                backend: Spread.of(s.server_cpu_per_1k for s in self._steps(backend, label, size))
                for backend in ("postgres", "sqlite")
            }
            database = Spread.of(
                s.database_cpu_per_1k for s in self._steps("postgres", label, size)
            )
            text += (
                f" At {size:,} idle nodes the server used {_fmt(ours['postgres'], 2)} CPU s per "
                f"1,000 calls on PostgreSQL, {_fmt(ours['sqlite'], 2)} on SQLite, and the "
                f"PostgreSQL server {_fmt(database, 2)} more; on "
                f"{self.results.machine.get('nproc', '?')} CPUs shared with the load generator, "
                "the database's share is CPU the SuperLink does not get."
            )
        missed = [
            spec
            for spec in self._round_specs()
            if any(name.startswith(f"{_SCENARIO_NAMES['round']} {spec.label}:") for name in figures)
        ]
        for spec in missed if scenario == "round" else []:
            cpu = {
                backend: Spread.of(r.server_cpu_seconds for r in self._rounds(spec, backend, label))
                for backend in ("postgres", "sqlite")
            }
            database = Spread.of(
                r.database_cpu_seconds for r in self._rounds(spec, "postgres", label)
            )
            text += (
                f" Over the {spec.label} round the server used {_fmt(cpu['postgres'], 2)} "
                f"CPU s on PostgreSQL and {_fmt(cpu['sqlite'], 2)} on SQLite; the PostgreSQL "
                f"server {_fmt(database, 2)} CPU s."
            )
        return text

    # scenario D

    def _replica_tables(self) -> str:
        r = self.results
        if "replicas" not in r.settings.scenarios or not (r.replica_idle or r.replica_rounds):
            return ""
        counts = r.settings.replica_counts
        parts = [
            "## D. Replicas on one PostgreSQL",
            "",
            f"{_plural(min(r.settings.replica_runs, r.settings.runs), 'run')}: with "
            + " and with ".join(_plural(count, "replica") for count in counts)
            + " (`python -m superlink_async` processes on one new database, distinct ports, all "
            "started before the run is created), scenario A's search and the "
            f"{r.settings.replica_round.label} round of B. New nodes dial the replicas' Fleet "
            "APIs in turn (node 1 the first, node 2 the second, ...); the driver talks Exec and "
            "ServerAppIo to the first, so an instruction pushed there reaches a node of the "
            "second through the database, and its reply comes back the same way. `CPU s/1k "
            "per replica` is each replica's CPU (its process tree) per 1,000 of the calls it "
            "served, in replica order; `database CPU s/1k` is the PostgreSQL server's (all "
            "its processes) per 1,000 calls of the whole fleet. Replicas are not sampled by "
            "py-spy.",
        ]
        for label in self._replica_labels():
            parts += ["", f"### {label}", "", self._replica_largest(label), ""]
            parts += [self._replica_idle_table(label), "", self._replica_round_table(label)]
            parts += ["", self._projection(label)]
        return "\n".join(parts)

    def _replica_labels(self) -> list[str]:
        seen = {s.target for s in self.results.replica_idle + self.results.replica_rounds}
        return [label for label in self.labels if label in seen]

    def _replica_sessions(self, label: str, count: int) -> list[IdleSession]:
        return [s for s in self.results.replica_idle if s.target == label and s.replicas == count]

    def _replica_steps(self, label: str, count: int, size: int) -> list[IdleStep]:
        return _steps_at(self._replica_sessions(label, count), size)

    def _replica_largest(self, label: str) -> str:
        rows = []
        for count in self.results.settings.replica_counts:
            sessions = self._replica_sessions(label, count)
            largest = Spread.of(session.largest_sustained for session in sessions)
            why = "; ".join(sorted({session.stopped for session in sessions}))
            rows.append([_plural(count, "replica"), _fmt(largest, 0), why])
        return _table(["replicas", f"largest N with p99 < {self._limit_ms()} ms", "stopped"], rows)

    def _replica_idle_table(self, label: str) -> str:
        rows = []
        for size in self.results.settings.fleet_sizes:
            for count in self.results.settings.replica_counts:
                steps = self._replica_steps(label, count, size)
                if not steps:
                    continue

                rows.append(
                    [
                        f"{size:,}",
                        str(count),
                        f"{sum(step.sustained for step in steps)}/{len(steps)}",
                        _fmt(Spread.of(step.rate for step in steps), 0),
                        _fmt(Spread.of(step.p50_ms for step in steps)),
                        _fmt(Spread.of(step.p99_ms for step in steps)),
                        _per_replica([step.replica_calls for step in steps], count, 0),
                        _per_replica([step.replica_cpu_per_1k for step in steps], count),
                        _fmt(Spread.of(step.server_cpu_percent for step in steps), 0),
                        _fmt(Spread.of(step.database_cpu_per_1k for step in steps), 2),
                        _fmt(Spread.of(step.loadgen_cpu_percent for step in steps), 0),
                        _counts(sum((Counter(step.errors) for step in steps), Counter())),
                        str(sum(step.lost_nodes for step in steps)),
                    ]
                )
        header = ["nodes", "replicas", "sustained", "calls/s", "p50 ms", "p99 ms"]
        header += ["calls per replica", "CPU s/1k per replica", "replicas CPU %"]
        header += ["database CPU s/1k"]
        header += ["loadgen CPU %", "errors", "nodes lost"]
        return "Idle fleet:\n\n" + _table(header, rows)

    def _replica_round_table(self, label: str) -> str:
        spec = self.results.settings.replica_round
        rows = []
        for count in self.results.settings.replica_counts:
            results = [
                r for r in self.results.replica_rounds if r.target == label and r.replicas == count
            ]
            if not results:
                continue
            timed_out = " (timed out)" if any(r.timed_out for r in results) else ""
            rows.append(
                [
                    str(count),
                    _fmt(Spread.of(r.nodes for r in results), 0),
                    _fmt(Spread.of(r.push_seconds for r in results), 2),
                    _fmt(Spread.of(r.wall_seconds for r in results), 2) + timed_out,
                    _fmt(Spread.of(r.replies for r in results), 0),
                    _per_replica([r.replica_calls for r in results], count, 0),
                    _per_replica([r.replica_cpu_per_1k for r in results], count),
                    _fmt(Spread.of(r.server_cpu_seconds for r in results), 2),
                    _fmt(Spread.of(r.database_cpu_seconds for r in results), 2),
                    _counts(sum((Counter(r.failures) for r in results), Counter())),
                ]
            )
        header = ["replicas", "nodes", "push s", "wall s", "replies", "fleet calls per replica"]
        header += ["CPU s/1k per replica", "replicas CPU s", "database CPU s", "failed replies"]
        return f"Round {spec.label}:\n\n" + _table(header, rows)

    def _projection(self, label: str) -> str:
        """Two replicas with a CPU each against one, from the CPU each replica spent per call."""
        counts = self.results.settings.replica_counts
        if 1 not in counts or 2 not in counts:
            return ""
        single, double, same_load = self._projection_sizes(label)
        if not single:
            return "No projection: no fleet size was measured cleanly on one and on two replicas."
        c1 = Spread.of(step.replica_cpu_per_1k[0] for step in self._replica_steps(label, 1, single))
        c2 = Spread.of(
            statistics.fmean(step.replica_cpu_per_1k)
            for step in self._replica_steps(label, 2, double)
        )
        database = Spread.of(
            step.database_cpu_per_1k for step in self._replica_steps(label, 2, double)
        )
        if c1 is None or c2 is None:
            return "No projection: the per-replica CPU was not measured."
        per_node = offered_rate(1)
        projected = Ratio(2 * c1.median / c2.median)
        one = _PROJECTED_BUSY * 1000 / (c1.median * per_node)
        two = 2 * _PROJECTED_BUSY * 1000 / (c2.median * per_node)
        database_cpus = two * per_node * (database.median if database else math.nan) / 1000
        measured = ratio(
            Spread.of(s.largest_sustained for s in self._replica_sessions(label, 2)),
            Spread.of(s.largest_sustained for s in self._replica_sessions(label, 1)),
        )
        busiest = max(
            self._replica_steps(label, 2, double), key=lambda step: step.server_cpu_percent
        )
        goal = Goal(">=", _REPLICA_GOAL)
        load = (
            f"{single:,} nodes on one replica and {double:,} on two (the same load per replica)"
            if same_load
            else f"{single:,} nodes on one and on two replicas (no clean measurement of two "
            f"replicas at {2 * single:,}: each of the two carried half the load and all its "
            "fixed costs, so this errs low)"
        )
        lines = [
            "Projection. A replica with a CPU of its own serves idle nodes until "
            f"{100 * _PROJECTED_BUSY:g} % of that CPU is busy (scenario C's saturation). An idle "
            f"1.18 SuperNode makes {per_node:.3f} calls/s (a pull every 3 s, a ping every ~20 s), "
            "so one replica holds N_1 = 0.9 x 1000 / (c_1 x "
            f"{per_node:.3f}) nodes, where c_1 is its CPU s per 1,000 calls, and k replicas "
            "N_k = k x 0.9 x 1000 / (c_k x "
            f"{per_node:.3f}), where c_k is the mean per-replica cost measured with k replicas "
            "on one database: what the second replica adds to each one's work (contention "
            "on shared rows, no cache) is in c_k. Hence N_2 / N_1 = 2 c_1 / c_2, if the "
            "database keeps up: it needs the database CPU per 1,000 calls x calls/s of its own.",
            "",
            _table(
                ["figure", "value", "goal", "met"],
                [
                    [f"c_1 at {single:,} nodes, CPU s/1k", _fmt(c1, 2), "-", "-"],
                    [
                        f"c_2 at {double:,} nodes (mean of the two), CPU s/1k",
                        _fmt(c2, 2),
                        "-",
                        "-",
                    ],
                    ["projected N_1, nodes", f"{one:,.0f}", "-", "-"],
                    ["projected N_2, nodes", f"{two:,.0f}", "-", "-"],
                    [
                        "projected N_2 / N_1, a CPU per replica",
                        str(projected),
                        str(goal),
                        goal.verdict(projected),
                    ],
                    [
                        f"database CPU for N_2 nodes ({_fmt(database, 2)} s/1k calls), CPUs",
                        f"{database_cpus:.2f}",
                        "-",
                        "-",
                    ],
                    [
                        "measured here: largest N on two replicas / on one",
                        str(Ratio(measured)),
                        "-",
                        "-",
                    ],
                ],
            ),
            "",
            f"Costs compared at {load}."
            + (
                " A projection above 2x means the second replica's calls came out cheaper than "
                "the single replica's at the same load: that difference is run-to-run noise of "
                "per-call CPU on a shared machine, so read it as 2x."
                if projected.value > 2
                else ""
            )
            + f" What this machine shows: {self.results.machine.get('nproc', '?')} CPUs are "
            "shared by the replicas, PostgreSQL and the load generator; with two replicas at "
            f"{busiest.nodes:,} nodes the replicas used {busiest.server_cpu_percent:.0f} % of "
            f"one CPU together, PostgreSQL {_database_percent(busiest)} and the load generator "
            f"{busiest.loadgen_cpu_percent:.0f} %, so the measured ratio of the largest fleets "
            "is what one small machine gives and bounds nothing about replicas on CPUs of "
            "their own. It does show that nodes spread over two replicas are served with the "
            "errors and lost nodes in the tables (cross-replica delivery through the "
            "database), and what each call costs a replica with another one beside it on the "
            "same database, which the projection scales.",
        ]
        return "\n".join(lines)

    def _projection_sizes(self, label: str) -> tuple[int, int, bool]:
        """Sizes to compare per-call cost at: (one replica, two replicas, same load each).

        The largest size S measured cleanly (no error, no lost node) on one replica with
        2 S measured cleanly on two; else the largest S clean on both; (0, 0, False) if none.
        """

        def clean(count: int) -> set[int]:
            return {
                step.nodes
                for session in self._replica_sessions(label, count)
                for step in session.steps
                if not step.errors and not step.lost_nodes and step.replica_cpu_per_1k
            }

        one, two = clean(1), clean(2)
        doubled = [size for size in one if 2 * size in two]
        if doubled:
            return max(doubled), 2 * max(doubled), True
        common = one & two
        return (max(common), max(common), False) if common else (0, 0, False)

    # how it measures

    def _method(self) -> str:
        return "\n".join(
            [
                "## How it measures",
                "",
                "- Simulated SuperNodes behave like flwr 1.18.0's: CreateNode "
                "(`ping_interval=30`), Ping every 17.5-22.5 s, PullMessages every 3 s while idle, "
                "GetRun (once per run), GetFab and PushMessages per instruction, then an immediate "
                "pull. Every call carries `flwr-public-key-bin` (PEM SPKI of a per-node SECP384R1 "
                "key), `flwr-timestamp` and `flwr-signature-bin` (ECDSA-SHA256, DER); a node signs "
                "at most once per wall-clock second and reuses that timestamp within the second.",
                "- Failed calls are handled as flwr 1.18.0's SuperNode does: UNAVAILABLE is "
                "retried for ever after waits drawn uniformly from 0 to 1, 2, 4, ... s (capped at "
                "20 s); PERMISSION_DENIED drops the instruction at hand (on CreateNode it ends "
                "the node); any other code ends the node; a failed Ping is retried with the "
                "same backoff, uncapped. SuperNodes set no deadline but on Ping (5 s): a call "
                "stuck for 60 s is made again.",
                "- Clients are grpcio's C-core (`grpc.aio`), one event loop per load-generator "
                "process; each node has its own channel and TCP connection while the server's "
                "descriptor limit allows (`conns` shows when nodes had to share).",
                "- Latency is measured in the client from the call's start to its response, for "
                "calls started in the window; calls still running "
                "5 s after the window count with their age. Server CPU and RSS come from "
                "`/proc/<pid>/stat` and `/proc/<pid>/status` (`VmRSS`, `VmHWM`) of the SuperLink "
                "process; load-generator CPU is the sum over its worker processes.",
                "- The ServerApp driver plays `flwr run` (Exec StartRun with a real FAB) and "
                "`flwr-serverapp` (PullServerAppInputs, UpdateRunStatus running, GetNodes, "
                "PushMessages, PullMessages); each SuperLink runs with `--isolation process`.",
                "- The `postgres` backend: the tool starts one PostgreSQL server for the whole "
                "run (`initdb` into a temp dir, loopback, PostgreSQL's defaults: fsync and "
                "synchronous commit on) and gives each session a new database. Its CPU "
                "(`database CPU`) is the sum over the postmaster and its backends, read like "
                "the SuperLink's; it runs on the same CPUs. The payloads are zero-filled "
                "arrays, which PostgreSQL's TOAST compresses (real model weights would not "
                "compress) and SQLite stores as they are.",
            ]
        )

    # lookups

    def _limit_ms(self) -> str:
        return f"{1000 * self.results.settings.p99_limit:g}"

    def _sessions(self, backend: str, label: str) -> list[IdleSession]:
        return [s for s in self.results.idle if s.backend == backend and s.target == label]

    def _steps(self, backend: str, label: str, size: int) -> list[IdleStep]:
        return _steps_at(self._sessions(backend, label), size)

    def _common_size(self, backend: str) -> int:
        """The largest fleet size every idle session of ``backend`` measured (0 if none)."""
        sessions = [s for s in self.results.idle if s.backend == backend]
        if not sessions:
            return 0
        return min((max((step.nodes for step in s.steps), default=0) for s in sessions), default=0)

    def _round_specs(self) -> list[RoundSpec]:
        return list(dict.fromkeys(result.spec for result in self.results.rounds))

    def _rounds(self, spec: RoundSpec, backend: str, label: str) -> list[RoundResult]:
        return [
            r
            for r in self.results.rounds
            if r.spec == spec and r.backend == backend and r.target == label
        ]

    def _round_figure(
        self, spec: RoundSpec, backend: str, pick: Callable[[RoundResult], float]
    ) -> dict[str, Spread | None]:
        return {
            label: Spread.of(pick(result) for result in self._rounds(spec, backend, label))
            for label in self.labels
        }

    def _timed_out(self, spec: RoundSpec, backend: str) -> frozenset[str]:
        """Targets with a run of this round that timed out: their wall time is a lower bound."""
        return frozenset(
            label
            for label in self.labels
            if any(r.timed_out for r in self._rounds(spec, backend, label))
        )

    def _edge_runs(self) -> int:
        """Runs of scenario C per backend and target (``Bench.runs_of``)."""
        return min(self.results.settings.edge_runs, self.results.settings.runs)

    def _edge_sessions(self, backend: str, label: str) -> list[EdgeSession]:
        return [s for s in self.results.edge if s.backend == backend and s.target == label]

    def _edge_factors(self, backend: str) -> list[float]:
        """The factors some round of scenario C ran at on ``backend``, in the settings' order."""
        ran = {r.factor for s in self.results.edge if s.backend == backend for r in s.rounds}
        return [factor for factor in self.results.settings.edge_factors if factor in ran]

    def _edge_rounds(self, backend: str, label: str, factor: float) -> list[EdgeRound]:
        return [
            result
            for session in self._edge_sessions(backend, label)
            for result in session.rounds
            if result.factor == factor
        ]

    def _edge_figure(
        self, backend: str, factor: float, pick: Callable[[EdgeRound], float]
    ) -> dict[str, Spread | None]:
        return {
            label: Spread.of(pick(result) for result in self._edge_rounds(backend, label, factor))
            for label in self.labels
        }

    def _edge_bounded(
        self, backend: str, factor: float, flag: Callable[[EdgeRound], bool]
    ) -> frozenset[str]:
        """Targets with a round at ``factor`` whose figure is a lower bound (it timed out)."""
        return frozenset(
            label
            for label in self.labels
            if any(flag(result) for result in self._edge_rounds(backend, label, factor))
        )

    def _largest(self, backend: str, label: str) -> Spread | None:
        return Spread.of(session.largest_sustained for session in self._sessions(backend, label))


def _steps_at(sessions: list[IdleSession], size: int) -> list[IdleStep]:
    """The steps of ``sessions`` at fleet size ``size``, over runs."""
    return [step for session in sessions for step in session.steps if step.nodes == size]


def _wall(result: RoundResult) -> float:
    return result.wall_seconds


def _rss_per_1k(step: IdleStep) -> float:
    return step.rss_per_1k_nodes_mib


def _cpu_per_1k(step: IdleStep) -> float:
    return step.server_cpu_per_1k


def _database_percent(step: IdleStep) -> str:
    """The PostgreSQL server's CPU over a window, in percent of one CPU."""
    per_1k = step.database_cpu_per_1k
    return "-" if per_1k is None else f"{per_1k * step.rate / 10:.0f} %"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


def _per_replica(per_run: Sequence[Sequence[float]], count: int, digits: int = 2) -> str:
    """Each replica's figure over runs (median [min-max]), in replica order: ``a / b``."""
    return " / ".join(
        _fmt(Spread.of(run[index] for run in per_run if len(run) > index), digits)
        for index in range(count)
    )


def _throughput(result: RoundResult) -> float:
    return result.reply_throughput_mb_s


def _factor_label(factor: float) -> str:
    """``N_sat`` for 1, else e.g. ``1.5 x N_sat``."""
    return "N_sat" if factor == 1 else f"{factor:g} x N_sat"


def _size(size: int) -> str:
    """E.g. ``100 KB`` or ``10 MB`` (10^3 and 10^6 bytes)."""
    return f"{size // MB} MB" if size >= MB else f"{size // KB} KB"


def _scenario_of(figure: str) -> str:
    """The scenario a goals row belongs to, from its figure's name."""
    return next((key for key, name in _SCENARIO_NAMES.items() if figure.startswith(name)), "idle")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _zero_verdict(spread: Spread | None) -> str:
    """``yes`` when every run measured zero, ``no`` when one did not, ``-`` without runs."""
    if spread is None:
        return "-"
    return "yes" if spread.high == 0 else "no"


def _counts(counts: Counter[str]) -> str:
    """``0``, or the total and each kind, e.g. ``3: PullMessages UNAVAILABLE 3``."""
    if not counts:
        return "0"
    kinds = ", ".join(f"{name} {count}" for name, count in counts.most_common())
    return f"{sum(counts.values())}: {kinds}"


def _loads(loads: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in loads)
