"""What a benchmark run measures: the presets behind ``make bench`` and ``make bench-smoke``."""

from __future__ import annotations

from dataclasses import dataclass

KB = 1000
MB = 1000 * KB


@dataclass(frozen=True)
class RoundSpec:
    """One round: ``nodes`` instructions of ``payload_bytes``, replies of ``reply_bytes``."""

    nodes: int
    payload_bytes: int
    reply_bytes: int

    @property
    def label(self) -> str:
        """E.g. ``1000 x 100 KB``: nodes x reply size."""
        size = (
            f"{self.reply_bytes // MB} MB"
            if self.reply_bytes >= MB
            else f"{self.reply_bytes // KB} KB"
        )
        return f"{self.nodes} x {size}"


@dataclass(frozen=True)
class Settings:
    """Every knob of a benchmark run; times in seconds."""

    #: Each (backend, target) pair is measured this often; figures are medians.
    runs: int
    #: ``memory`` (no ``--database``) and/or ``sqlite`` (``--database`` on a file).
    backends: tuple[str, ...]
    #: ``idle`` (scenario A) and/or ``round`` (scenario B).
    scenarios: tuple[str, ...]
    #: Scenario A: idle-fleet sizes, grown in this order on one server until one fails.
    fleet_sizes: tuple[int, ...]
    #: A fleet size is sustained when the p99 of all its calls stays under this.
    p99_limit: float
    #: New nodes start over at least this long (one pull period spreads their phases).
    min_spread: float
    #: ... or longer, at this many new nodes per second.
    ramp_rate: float
    #: Pause after growing, before measuring or pushing a round.
    settle: float
    #: Scenario A: how long each fleet size is measured.
    window: float
    #: Scenario A: a server session stops growing once the next size would pass this.
    idle_budget: float
    #: Scenario B: the rounds, run in order of fleet size on one server and one run.
    rounds: tuple[RoundSpec, ...]
    #: Scenario B: a round still missing replies after this has failed.
    round_timeout: float
    #: Scenario B: the driver's PullMessages period (``flwr-serverapp`` uses 3 s).
    driver_pull_period: float
    #: Load-generator processes.
    workers: int
    #: Sessions not started by then are skipped (and listed in the report).
    time_budget: float
    #: Sample the first target's last run of each scenario with py-spy, for the report.
    profile_last_run: bool


FULL = Settings(
    runs=3,
    backends=("memory", "sqlite"),
    scenarios=("idle", "round"),
    fleet_sizes=(250, 500, 1000, 2000, 5000, 10000, 20000),
    p99_limit=0.2,
    min_spread=3.0,
    ramp_rate=500.0,
    settle=0.5,
    window=5.0,
    idle_budget=50.0,
    rounds=(
        RoundSpec(10, 10 * MB, 10 * MB),
        RoundSpec(100, 100 * KB, 100 * KB),
        RoundSpec(1000, 100 * KB, 100 * KB),
    ),
    round_timeout=25.0,
    driver_pull_period=0.25,
    workers=2,
    time_budget=13.5 * 60,
    profile_last_run=True,
)

SMOKE = Settings(
    runs=1,
    backends=("memory", "sqlite"),
    scenarios=("idle", "round"),
    fleet_sizes=(10, 30),
    p99_limit=0.2,
    min_spread=1.0,
    ramp_rate=1000.0,
    settle=0.5,
    window=3.5,
    idle_budget=30.0,
    rounds=(RoundSpec(3, 1 * MB, 1 * MB), RoundSpec(12, 10 * KB, 10 * KB)),
    round_timeout=30.0,
    driver_pull_period=0.25,
    workers=1,
    time_budget=120.0,
    profile_last_run=True,
)

PRESETS = {"full": FULL, "smoke": SMOKE}
