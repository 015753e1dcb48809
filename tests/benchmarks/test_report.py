"""The report explains a goal it cannot show met, from the run's own profile and figures."""

from __future__ import annotations

import dataclasses

from benchmarks.config import FULL
from benchmarks.profiling import ProfileRow
from benchmarks.report import Report, Results
from benchmarks.scenarios import IdleSession, IdleStep, ProfiledSession
from benchmarks.superlink import Target

OURS, REFERENCE = "superlink-async", "flower-superlink"


def step(nodes: int, sustained: bool, cpu_per_1k: float) -> IdleStep:
    return IdleStep(
        nodes=nodes,
        registered=nodes,
        connections=nodes,
        seconds=5.0,
        calls=nodes,
        rate=nodes / 3,
        p50_ms=5.0,
        p99_ms=50.0 if sustained else 900.0,
        methods={},
        errors={},
        ramp_errors={},
        lost_nodes=0,
        server_cpu_per_1k=cpu_per_1k,
        server_cpu_percent=50.0,
        rss_mib=100.0,
        hwm_mib=100.0,
        rss_per_1k_nodes_mib=20.0,
        loadgen_cpu_percent=30.0,
        loadgen_lag_p99_ms=5.0,
        sustained=sustained,
    )


def results(reference_holds: int) -> Results:
    """One idle run each in memory: ours holds 1,000 nodes, the reference as given."""
    ours = IdleSession(OURS, "memory", 0, 60.0, [step(1000, True, 1.4), step(2000, False, 1.4)])
    reference = IdleSession(
        REFERENCE,
        "memory",
        0,
        60.0,
        [step(500, True, 1.8), step(1000, reference_holds >= 1000, 1.8)],
    )
    profile = ProfiledSession(
        "idle", "memory", 0, 900, 55.5, [ProfileRow("is_signed_by (x.py)", 51.8, 55.5)]
    )
    return Results(
        command="python -m benchmarks",
        started="2026-11-23 10:00 UTC",
        seconds=60.0,
        machine={"nproc": "2"},
        versions={},
        settings=dataclasses.replace(FULL, runs=1, backends=("memory",), scenarios=("idle",)),
        targets=[Target(OURS, ("ours",)), Target(REFERENCE, ("reference",))],
        baseline=REFERENCE,
        load_before=(0.0, 0.0, 0.0),
        load_after=(0.0, 0.0, 0.0),
        idle=[ours, reference],
        rounds=[],
        broken=[],
        profiles=[profile],
    )


def test_a_goal_not_met_is_explained_by_the_profile_and_cpu_per_call() -> None:
    text = Report(results(reference_holds=1000)).render()
    note = text.split("**Not shown met: Idle fleet")[1].split("\n")[0]
    assert "(memory).**" in note
    assert "ECDSA signature checks take 56 % of its event loop's time" in note
    assert f"at 1,000 nodes: `{OURS}` 1.4 s, `{REFERENCE}` 1.8 s" in note
    assert "this machine has 2, shared with the load generator" in note


def test_a_met_goal_gets_no_explanation() -> None:
    text = Report(results(reference_holds=500)).render()
    assert "| >= 2x | yes |" in text
    assert "Not shown met" not in text
