"""End-to-end on PostgreSQL: real flwr 1.18.0 processes against ``--database postgresql://``.

The SQLite scenarios of test_federation.py, on the tests' real PostgreSQL server: a run on
two SuperNodes completes and survives a graceful restart; a SuperLink killed mid-run comes
back, fails the interrupted run and completes the next one with the same SuperNodes; and
PostgreSQL itself restarted mid-run leaves the federation carrying on, no process
restarted. FABs are in the database: the SuperLink's ``--storage-dir`` is never created.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from superlink_async.testing.postgres import PASSWORD, PostgresServer, running_postgres_server
from tests.e2e.harness import (
    COMPLETED,
    FAILED,
    GRACEFUL_EXIT_LINE,
    FederationFactory,
    FlowerApp,
    LocalFederation,
    Timeouts,
    start_long_run,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def ours_only(targets_reference: bool) -> None:
    if targets_reference:
        pytest.skip("flower-superlink 1.18.0 has no PostgreSQL backend")


def assert_no_fab_files(federation: LocalFederation) -> None:
    assert not (federation.workdir / "superlink-ffs").exists()


def assert_password_never_written(federation: LocalFederation) -> None:
    for superlink in federation.superlinks:
        assert PASSWORD not in superlink.output()


def test_postgres_state_survives_a_graceful_restart(
    make_federation: FederationFactory, flower_app: FlowerApp, postgres_url: str
) -> None:
    """A run completes on two SuperNodes; SIGTERM exits 0; a SuperLink restarted on the same
    database still lists the run finished:completed in `flwr ls`."""
    federation = make_federation(superlink_args=["--database", postgres_url])
    cli = federation.cli(flower_app)
    run_id = cli.run()
    cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES)
    first = federation.require_superlink()
    assert first.stop(signal.SIGTERM, Timeouts.SUPERLINK_EXITS) == 0, first.tail()
    assert GRACEFUL_EXIT_LINE in first.output()

    federation.start_superlink()
    assert [(run.run_id, run.status) for run in cli.runs()] == [(run_id, COMPLETED)]
    assert_no_fab_files(federation)
    assert_password_never_written(federation)


def test_a_superlink_killed_mid_run_fails_that_run_and_completes_the_next(
    make_federation: FederationFactory, flower_app: FlowerApp, postgres_url: str
) -> None:
    """`kill -9` of the SuperLink during a run; restarted on the same database with the same
    `--replica-id`, it takes its lease back and finishes the interrupted run as failed at
    once (no lease wait), the same SuperNodes carry on, and the next run completes."""
    federation = make_federation(
        superlink_args=["--database", postgres_url, "--replica-id", "restarted-link"]
    )
    supernodes = list(federation.supernodes)
    cli = federation.cli(flower_app)
    interrupted, _ = start_long_run(federation, cli)
    killed = federation.require_superlink()
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait(Timeouts.SUPERLINK_EXITS) == -signal.SIGKILL

    federation.start_superlink()
    assert cli.status(interrupted) == FAILED
    run_id = cli.run()
    assert cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED
    assert all(supernode.alive() for supernode in supernodes)
    assert_no_fab_files(federation)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with running_postgres_server() as server:
        yield server


def test_the_federation_carries_on_across_a_postgres_restart(
    make_federation: FederationFactory, flower_app: FlowerApp, own_server: PostgresServer
) -> None:
    """PostgreSQL stopped and started again while a run is running: no process restarts,
    the run completes, and so does the next one. Every call the restart failed was told
    UNAVAILABLE, which SuperNodes retry, never INTERNAL, which ends one (the pool's
    connections that the old server ended are replaced, not reused)."""
    federation = make_federation(superlink_args=["--database", own_server.url()])
    superlink = federation.require_superlink()
    cli = federation.cli(flower_app)
    run_id = cli.run()
    cli.wait_for_status(run_id, "running", Timeouts.RUN_STARTS)
    own_server.stop()
    own_server.start()
    assert cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED
    next_run = cli.run()
    assert cli.wait_for_status(next_run, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED
    assert superlink.alive(), superlink.tail()
    assert federation.superlinks == [superlink]
    assert "Unexpected error while serving a call" not in superlink.output()
    assert_password_never_written(federation)
