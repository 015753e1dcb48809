"""End-to-end: two replicas on one PostgreSQL database, real SuperNodes behind HAProxy.

Real flwr 1.18.0 processes throughout: two SuperNodes dial HAProxy, which sends each of
their calls to the next replica; the ``flwr`` CLI talks to one replica or the other. A run
started through one replica completes and the other replica lists it and shows its log;
exactly one ``flwr-serverapp`` runs it even when both replicas launch ServerApps; ``flwr
stop`` through one replica ends the ServerApp another replica runs; and a replica killed
with SIGKILL has its run finished as failed by the survivor within the lease bound while the
SuperNodes carry on through the balancer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.e2e.harness import (
    COMPLETED,
    FAILED,
    LONG_RUN_CONFIG,
    RUN_FINISHED_LINE,
    STOPPED,
    FlowerApp,
    Timeouts,
    strip_ansi,
    wait_for,
    wait_until_gone,
)
from tests.e2e.replicas import FLEET, Replicas

pytestmark = pytest.mark.e2e

#: The tests' replica lease (seconds): the default is 20, short enough here to wait for.
LEASE = 4.0
#: The documented failover bound: the lease lapses, then the next reaping (every lease/4).
FAILOVER_BOUND = LEASE + LEASE / 4
#: What `flwr ls` polling adds to a measured time on a loaded machine (a call takes ~1-2 s).
CLI_SLACK = 5.0

ReplicaFactory = Callable[[Mapping[str, Sequence[str]]], Replicas]


@pytest.fixture(autouse=True)
def ours_only(targets_reference: bool) -> None:
    if targets_reference:
        pytest.skip("flower-superlink 1.18.0 has no PostgreSQL backend and no replicas")


@pytest.fixture
def make_replicas(
    tmp_path: Path, superlink_command: list[str], postgres_url: str, haproxy: Path
) -> Iterator[ReplicaFactory]:
    """Start replicas (id to extra flags) on one fresh database; all gone afterwards."""
    started: list[Replicas] = []

    def make(replica_args: Mapping[str, Sequence[str]]) -> Replicas:
        replicas = Replicas(
            tmp_path / f"replicas-{len(started)}", superlink_command, postgres_url, replica_args
        )
        started.append(replicas)
        replicas.start()
        return replicas

    try:
        yield make
    finally:
        for replicas in started:
            print(replicas.tails())  # pytest shows it only when the test failed
            replicas.close()


def replica_flags(replica_id: str, lease: float = LEASE) -> list[str]:
    """A replica launching ServerApp children, with its id and (by default) the short lease."""
    return ["--replica-id", replica_id, "--replica-lease", f"{lease:g}"]


def start_long_run(replicas: Replicas, app: FlowerApp) -> tuple[int, str, str]:
    """A 1000-round run started through r1, running: its id, the replica whose child runs
    its ServerApp, and the other replica."""
    cli = replicas.cli("r1", app)
    run_id = cli.run(LONG_RUN_CONFIG)
    cli.wait_for_status(run_id, "running", Timeouts.RUN_STARTS)
    wait_for(
        lambda: any(replicas.serving().values()),
        Timeouts.SERVERAPP_APPEARS,
        what=f"the flwr-serverapp process of run {run_id}",
    )
    serving = replicas.serving()
    assert sorted(serving.values()) == [0, 1], serving
    owner = next(replica_id for replica_id, count in serving.items() if count)
    other = next(replica_id for replica_id in serving if replica_id != owner)
    return run_id, owner, other


def assert_calls_balanced_per_call(replicas: Replicas) -> None:
    """Every SuperNode connection had its calls served by both replicas."""
    calls: dict[str, Counter[str]] = defaultdict(Counter)
    for route in replicas.balancer.routes():
        if route.frontend == FLEET:
            calls[route.client][route.server] += 1
    print(f"Fleet calls per SuperNode connection, by replica: {dict(calls)}")
    assert len(calls) >= len(replicas.supernodes), calls
    assert all(set(served) == set(replicas.replicas) for served in calls.values()), calls


def test_a_run_through_one_replica_is_seen_through_the_other(
    make_replicas: ReplicaFactory, flower_app: FlowerApp
) -> None:
    """SuperNodes whose calls alternate between two replicas complete a run started through
    replica 1, which launches its ServerApp; replica 2 (no ServerApps of its own) lists the
    run completed and shows the ServerApp's log."""
    replicas = make_replicas({"r1": [], "r2": ["--isolation", "process"]})
    run_id = replicas.cli("r1", flower_app).run()
    replicas.cli("r1", flower_app).wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES)

    other = replicas.cli("r2", flower_app)
    assert [(run.run_id, run.status) for run in other.runs()] == [(run_id, COMPLETED)]
    assert RUN_FINISHED_LINE in strip_ansi(other.log_show(run_id))
    assert replicas.launches() == {"r1": 1, "r2": 0}
    assert_calls_balanced_per_call(replicas)


def test_exactly_one_serverapp_runs_a_run_when_both_replicas_launch_them(
    make_replicas: ReplicaFactory, flower_app: FlowerApp
) -> None:
    """Both replicas launch ServerApps: a run started through r1 completes, launched once
    across the federation; `flwr log` streaming through r2 shows the ServerApp's lines while
    it runs and ends with the run, and r2's `flwr ls` and `flwr log --show` show it too."""
    replicas = make_replicas({"r1": replica_flags("r1"), "r2": replica_flags("r2")})
    run_id = replicas.cli("r1", flower_app).run()

    other = replicas.cli("r2", flower_app)
    with subprocess.Popen(
        other.log_stream_argv(run_id),
        env=other.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as stream:
        try:
            replicas.cli("r1", flower_app).wait_for_status(
                run_id, COMPLETED, Timeouts.RUN_COMPLETES
            )
            streamed, _ = stream.communicate(timeout=Timeouts.OUTPUT_APPEARS)
        finally:
            stream.kill()  # only if it did not end with the run: the test fails then
    assert RUN_FINISHED_LINE in strip_ansi(streamed)
    assert [(run.run_id, run.status) for run in other.runs()] == [(run_id, COMPLETED)]
    assert RUN_FINISHED_LINE in strip_ansi(other.log_show(run_id))
    assert sum(replicas.launches().values()) == 1, replicas.launches()
    assert_calls_balanced_per_call(replicas)


def test_stop_through_one_replica_ends_the_serverapp_of_the_other(
    make_replicas: ReplicaFactory, flower_app: FlowerApp
) -> None:
    """`flwr stop` through the replica that does not run a long run's ServerApp: the run is
    stopped and the owner's flwr-serverapp is gone within a few seconds."""
    replicas = make_replicas({"r1": replica_flags("r1"), "r2": replica_flags("r2")})
    run_id, owner, other = start_long_run(replicas, flower_app)
    serverapps = replicas[owner].serverapp_processes()

    replicas.cli(other, flower_app).stop(run_id)
    replicas.cli(other, flower_app).wait_for_status(run_id, STOPPED, Timeouts.RUN_STOPS)
    wait_until_gone(serverapps, Timeouts.SERVERAPP_GONE)
    assert replicas.cli(owner, flower_app).status(run_id) == STOPPED
    assert sum(replicas.launches().values()) == 1, replicas.launches()


def test_a_killed_replica_has_its_run_failed_within_the_lease_bound(
    make_replicas: ReplicaFactory, flower_app: FlowerApp
) -> None:
    """`kill -9` of the replica running a run's ServerApp: the survivor finishes the run as
    failed, naming the lost replica, within lease + lease/4 (plus the CLI's polling); the
    SuperNodes carry on through the balancer with their node ids (none registers again) and
    a new run through the survivor completes."""
    replicas = make_replicas({"r1": replica_flags("r1"), "r2": replica_flags("r2")})
    run_id, owner, survivor = start_long_run(replicas, flower_app)
    killed = replicas[owner].require_superlink()

    os.kill(killed.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert killed.wait(Timeouts.SUPERLINK_EXITS) == -signal.SIGKILL
    cli = replicas.cli(survivor, flower_app)
    cli.wait_for_status(run_id, FAILED, FAILOVER_BOUND + CLI_SLACK + Timeouts.RUN_FAILS)
    failover = time.monotonic() - killed_at
    print(f"failover: run {run_id} failed {failover:.1f}s after replica {owner} was killed")
    assert failover <= FAILOVER_BOUND + CLI_SLACK
    assert owner in replicas.run_details(survivor, run_id)

    next_run = cli.run()
    assert cli.wait_for_status(next_run, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED
    assert all(supernode.alive() for supernode in replicas.supernodes)
    assert replicas.registrations() == len(replicas.supernodes), "a SuperNode registered again"
    assert replicas.launches()[survivor] >= 1
    replicas.balancer.wait_for_status("DOWN", Timeouts.OUTPUT_APPEARS, servers=[owner])


def test_a_replica_shut_down_hands_its_run_over_without_the_lease_wait(
    make_replicas: ReplicaFactory, flower_app: FlowerApp
) -> None:
    """SIGTERM to the replica running a run's ServerApp, with a 30 s lease: it exits 0 and
    its run is already failed, naming it, when the other replica is asked; a new run through
    the other replica completes."""
    handover_lease = 30.0
    replicas = make_replicas(
        {"r1": replica_flags("r1", handover_lease), "r2": replica_flags("r2", handover_lease)}
    )
    run_id, owner, survivor = start_long_run(replicas, flower_app)
    stopping = replicas[owner].require_superlink()
    stopped_at = time.monotonic()
    assert stopping.stop(signal.SIGTERM, Timeouts.SUPERLINK_EXITS) == 0, stopping.tail()
    cli = replicas.cli(survivor, flower_app)
    assert cli.status(run_id) == FAILED
    assert time.monotonic() - stopped_at < handover_lease
    assert owner in replicas.run_details(survivor, run_id)

    next_run = cli.run()
    assert cli.wait_for_status(next_run, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED
    assert all(supernode.alive() for supernode in replicas.supernodes)
