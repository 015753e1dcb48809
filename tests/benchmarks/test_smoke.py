"""The benchmark instrument at smoke size against our server, so that it cannot rot unnoticed.

It runs exactly what ``make bench-smoke`` runs (``python -m benchmarks --preset smoke``), with
the report and the raw results in a scratch directory, and checks that every scenario measured
something real: every fleet size sustained, every round answered by every node, the edge
scenario's search ended (at N_sat or at its largest size) and its rounds answered, every
scenario profiled; and that the raw results render back into the same report.
"""

from __future__ import annotations

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
    sessions = results["idle"]
    assert {session["backend"] for session in sessions} == {"memory", "sqlite"}
    sizes = results["settings"]["fleet_sizes"]
    for session in sessions:
        assert [step["nodes"] for step in session["steps"]] == sizes
        for step in session["steps"]:
            assert step["sustained"], step
            assert step["registered"] == step["connections"] == step["nodes"]
            assert step["methods"]["PullMessages"]["calls"] >= step["nodes"]
    rounds = results["rounds"]
    assert len(rounds) == 2 * len(results["settings"]["rounds"])
    for result in rounds:
        assert result["replies"] == result["nodes"] == result["spec"]["nodes"], result
        assert result["failures"] == {}
        assert result["wall_seconds"] > 0

    edge = results["edge"]
    assert sorted(session["backend"] for session in edge) == ["memory", "sqlite"]
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
        (scenario, backend)
        for scenario in ("idle", "round", "edge")
        for backend in ("memory", "sqlite")
    }
    assert all(p["samples"] > 0 and p["rows"] for p in profiles)

    text = report.read_text()
    for heading in (
        "## Against the issue's goals",
        "## A. Idle fleet",
        "## B. One round",
        "## C. At the edge",
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
