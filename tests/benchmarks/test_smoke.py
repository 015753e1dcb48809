"""The benchmark instrument at smoke size against our server, so that it cannot rot unnoticed.

It runs exactly what ``make bench-smoke`` runs (``python -m benchmarks --preset smoke``), with
the report and the raw results in a scratch directory, and checks that every scenario measured
something real on every backend, PostgreSQL included (on a server the tool started): every
fleet size sustained, every round answered by every node, the edge scenario's search ended (at
N_sat or at its largest size) and its rounds answered, the replica scenario's fleet served by
one and by two replicas with each one's CPU per call, every scenario profiled but the replica
one; and that the raw results render back into the same report.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.config import SMOKE

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_smoke_preset_measures_every_scenario(tmp_path: Path) -> None:
    report, raw = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    command = [sys.executable, "-m", "benchmarks", "--preset", "smoke", "--strict"]
    command += ["--output", str(report), "--json", str(raw)]
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=420, check=False
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    results = json.loads(raw.read_text())
    assert [target["label"] for target in results["targets"]] == ["superlink-async"]
    assert results["broken"] == []
    backends = ["memory", "sqlite", "postgres"]
    sessions = results["idle"]
    assert [session["backend"] for session in sessions] == backends
    sizes = results["settings"]["fleet_sizes"]
    for session in [*sessions, *results["replica_idle"]]:
        assert [step["nodes"] for step in session["steps"]] == sizes
        for step in session["steps"]:
            assert step["sustained"], step
            assert step["registered"] == step["nodes"]
            assert step["connections"] == step["nodes"]
            assert step["methods"]["PullMessages"]["calls"] >= step["nodes"]
            assert len(step["replica_cpu_per_1k"]) == session["replicas"]
            assert sum(step["replica_calls"]) == step["calls"], step
            assert min(step["replica_calls"]) > 0, step  # every replica served the fleet
            assert all(cpu > 0 for cpu in step["replica_cpu_per_1k"]), step
            on_postgres = session["backend"] == "postgres"
            assert (step["database_cpu_per_1k"] is not None) == on_postgres, step
    assert [s["replicas"] for s in results["replica_idle"]] == list(SMOKE.replica_counts)
    rounds = results["rounds"]
    assert len(rounds) == len(backends) * len(results["settings"]["rounds"])
    replica_rounds = results["replica_rounds"]
    assert [r["replicas"] for r in replica_rounds] == list(SMOKE.replica_counts)
    for result in [*rounds, *replica_rounds]:
        assert result["replies"] == result["nodes"] == result["spec"]["nodes"], result
        assert result["failures"] == {}
        assert result["wall_seconds"] > 0
        assert result["calls"] >= result["nodes"]  # a pull and a push at least per node
    for result in replica_rounds:
        assert result["spec"] == dataclasses.asdict(SMOKE.replica_round)
        assert len(result["replica_cpu_per_1k"]) == result["replicas"]
        assert sum(result["replica_calls"]) == result["calls"]
        assert min(result["replica_calls"]) > 0, result
        assert result["database_cpu_seconds"] > 0

    edge = results["edge"]
    assert [session["backend"] for session in edge] == list(SMOKE.edge_backends)
    sizes = list(SMOKE.edge_sizes())
    for session in edge:
        probes = session["probes"]
        assert [probe["nodes"] for probe in probes] == sizes[: len(probes)]
        assert session["saturated"] or len(probes) == len(sizes), session  # N_sat or max
        for probe in probes:
            assert probe["registered"] == probe["nodes"], probe
            assert probe["server_cpu_percent"] > 0, probe
        n_sat = probes[-1]["nodes"]
        assert [r["factor"] for r in session["rounds"]] == list(SMOKE.edge_factors)
        for result in session["rounds"]:
            assert result["online"] == result["nodes"] == round(result["factor"] * n_sat)
            assert result["replies"] == result["nodes"], result
            assert result["failures"] == {}
            assert not result["push_timed_out"]
            assert 0 < result["push_seconds"] < result["wall_seconds"]
            assert 0 < result["poll_p50_ms"] <= result["poll_p99_ms"], result
            assert result["lost_nodes"] == 0

    profiles = results["profiles"]  # our last (only) run of each scenario, sampled
    assert {(p["scenario"], p["backend"]) for p in profiles} == {
        *((scenario, backend) for scenario in ("idle", "round") for backend in backends),
        *(("edge", backend) for backend in SMOKE.edge_backends),
    }
    assert all(p["samples"] > 0 and p["rows"] for p in profiles)

    text = report.read_text()
    for heading in (
        "## Against the issue's goals",
        "## PostgreSQL against SQLite",
        "## A. Idle fleet",
        "## B. One round",
        "## C. At the edge",
        "## D. Replicas on one PostgreSQL",
        "projected N_2 / N_1, a CPU per replica",
        "## Where `superlink-async` spends its time",
    ):
        assert heading in text

    rendered = tmp_path / "rendered.md"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", str(raw), "--output", str(rendered)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert rendered.read_text() == text
