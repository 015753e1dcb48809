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
    #: ``memory`` (no ``--database``), ``sqlite`` (``--database`` on a file) and/or
    #: ``postgres`` (``--database postgresql://…``: a fresh database per session on a server
    #: the bench starts; targets without PostgreSQL, the reference, sit it out).
    backends: tuple[str, ...]
    #: ``idle`` (scenario A), ``round`` (scenario B), ``edge`` (scenario C) and/or
    #: ``replicas`` (scenario D: A's search and one round of B on one and more replicas of
    #: one PostgreSQL database).
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
    #: Scenarios A and C: how long each fleet size is measured.
    window: float
    #: Scenario A: a server session stops growing once the next size would pass this.
    idle_budget: float
    #: Scenario B: the rounds, run in order of fleet size on one server and one run.
    rounds: tuple[RoundSpec, ...]
    #: Scenario B: a round still missing replies after this has failed.
    round_timeout: float
    #: Scenario B: the driver's PullMessages period (``flwr-serverapp`` uses 3 s).
    driver_pull_period: float
    #: Scenario C: runs of it per backend and target, at most ``runs``: the first ones, so
    #: that the time budget does not reach them. At full size a session takes 2-4 min (a
    #: search of 4-7 sizes, ~10 s each, then two rounds of up to 60 s and a regrowth), so
    #: the full preset runs it once: 4 sessions, ~10-13 min on top of A and B's ~14.
    edge_runs: int
    #: Scenario C: the idle fleet grows from this size ...
    edge_start: int
    #: ... by this factor per step (rounded) ...
    edge_growth: float
    #: ... up to this size (N_sat is this size, marked so, if it is reached first) ...
    edge_max: int
    #: ... until idle polling keeps the server this busy: CPU seconds per second over one
    #: ``window``, its process tree summed (0.9 = 90 % of one CPU), or until the idle
    #: calls' p99 reaches ``p99_limit``: on 2 CPUs shared with the load generator, a server
    #: may fall behind before it gets 90 % of a CPU. That size is N_sat.
    edge_busy: float
    #: Scenario C: a round runs at each of these multiples of N_sat, in this order.
    edge_factors: tuple[float, ...]
    #: Scenario C: the size of each instruction's model and of each reply.
    edge_payload_bytes: int
    #: Scenario C: a round (its push included) still missing replies after this has failed.
    edge_round_timeout: float
    #: Scenario C: how long new nodes get to register and show in GetNodes. A 1.18
    #: SuperNode retries an UNAVAILABLE CreateNode for ever, and a saturated or shedding
    #: server registers slowly, so this is generous; late nodes keep trying meanwhile.
    edge_register_wait: float
    #: Scenario C on these of ``backends`` only.
    edge_backends: tuple[str, ...]
    #: Scenario D: runs of it, at most ``runs`` (the first ones).
    replica_runs: int
    #: Scenario D: the replica counts compared, each measured in every run of it.
    replica_counts: tuple[int, ...]
    #: Scenario D: the round run on each replica count.
    replica_round: RoundSpec
    #: Load-generator processes.
    workers: int
    #: Sessions not started by then are skipped (and listed in the report). The full
    #: preset's budget is what its sessions take on a quiet 2-CPU machine plus a little
    #: (see FULL); the last run's sessions are the ones a slow machine skips.
    time_budget: float
    #: Sample the first target's last run of each scenario with py-spy, for the report.
    profile_last_run: bool
    #: Scenario C at this one size for every target instead of each one's own search
    #: (0: search), to compare the servers at the same N.
    edge_nodes: int = 0

    def edge_sizes(self) -> tuple[int, ...]:
        """Scenario C's search: ``edge_start`` grown by ``edge_growth`` up to ``edge_max``."""
        if self.edge_nodes:
            return (self.edge_nodes,)
        sizes = [min(self.edge_start, self.edge_max)]
        while sizes[-1] < self.edge_max:
            grown = max(sizes[-1] + 1, round(sizes[-1] * self.edge_growth))
            sizes.append(min(grown, self.edge_max))
        return tuple(sizes)


#: The full preset, timed on 2 CPUs: a session of A takes ~70 s (its 70 s budget), one of B
#: ~40 s (~55 s when a round times out at 25 s), one of C 2-4 min. Memory and SQLite, both
#: targets, 3 runs of A and B and one of C: ~27 min, which the earlier 23 min budget cut
#: short by 5 sessions. PostgreSQL is ours alone (the reference has none), in 3 runs of A
#: and B like SQLite, whose figures its targets are ratios of: ~6 min. It gets no C: C is
#: about where one event loop saturates, which signature checks decide on every backend,
#: and its ~3 min would push the whole past 40 min. D (one and two replicas, A's search
#: and the 1,000-node round each) is ~4 min per run and gets one: its figures are CPU per
#: call over thousands of calls, and the largest idle fleet is a coarse step that a
#: second run would rarely move. A's sizes step by 1.5x or less up to 2,000 (250, 500,
#: 750, 1,000, 1,500, 2,000): with steps of 2x, "within 1.5x" of another figure could not
#: show (PostgreSQL's 500 against SQLite's 1,000 was 0.5x whether it served 500 or 999).
#: Those two more steps cost A 20 s per session. All in, ~42 min: the 42 min budget lets a
#: quiet machine start every session, and a busy one ends within a session (~1.5 min) of it.
FULL = Settings(
    runs=3,
    backends=("memory", "sqlite", "postgres"),
    scenarios=("idle", "round", "edge", "replicas"),
    fleet_sizes=(250, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 20000),
    p99_limit=0.2,
    min_spread=3.0,
    ramp_rate=500.0,
    settle=0.5,
    window=5.0,
    idle_budget=70.0,
    rounds=(
        RoundSpec(10, 10 * MB, 10 * MB),
        RoundSpec(100, 100 * KB, 100 * KB),
        RoundSpec(1000, 100 * KB, 100 * KB),
    ),
    round_timeout=25.0,
    driver_pull_period=0.25,
    edge_runs=1,
    edge_start=500,
    edge_growth=1.3,
    edge_max=4000,
    edge_busy=0.9,
    edge_factors=(1.0, 1.5),
    edge_payload_bytes=100 * KB,
    edge_round_timeout=60.0,
    edge_register_wait=60.0,
    edge_backends=("memory", "sqlite"),
    replica_runs=1,
    replica_counts=(1, 2),
    replica_round=RoundSpec(1000, 100 * KB, 100 * KB),
    workers=2,
    time_budget=42 * 60,
    profile_last_run=True,
)

#: Every scenario and backend once at tiny sizes, within ~1.5 min (``make test`` runs it):
#: one idle size per session (C's search grows through two), C on memory alone (it
#: exercises the instrument, which is the same on every backend).
SMOKE = Settings(
    runs=1,
    backends=("memory", "sqlite", "postgres"),
    scenarios=("idle", "round", "edge", "replicas"),
    fleet_sizes=(30,),
    # Judged as the full preset judges, but with room for a busy machine's stall: a
    # 2-CPU machine running the whole suite once took 239 ms for one of 39 calls here.
    p99_limit=1.0,
    min_spread=1.0,
    ramp_rate=1000.0,
    settle=0.5,
    window=3.5,
    idle_budget=30.0,
    rounds=(RoundSpec(3, 1 * MB, 1 * MB), RoundSpec(12, 10 * KB, 10 * KB)),
    round_timeout=30.0,
    driver_pull_period=0.25,
    edge_runs=1,
    edge_start=10,
    edge_growth=2.0,
    edge_max=20,
    edge_busy=0.9,
    edge_factors=(1.0, 1.5),
    edge_payload_bytes=10 * KB,
    edge_round_timeout=30.0,
    edge_register_wait=30.0,
    edge_backends=("memory",),
    replica_runs=1,
    replica_counts=(1, 2),
    replica_round=RoundSpec(12, 10 * KB, 10 * KB),
    workers=1,
    time_budget=240.0,
    profile_last_run=True,
)

PRESETS = {"full": FULL, "smoke": SMOKE}
