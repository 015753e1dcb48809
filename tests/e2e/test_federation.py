"""End-to-end: real flwr 1.18.0 SuperNodes, flwr-serverapp and `flwr` CLI against the SuperLink.

Each test starts its own SuperLink (and usually two SuperNodes) on free 127.0.0.1 ports and
drives it with the CLI, like Flower's framework/e2e scripts. By default the SuperLink is ours;
``SUPERLINK_E2E_CMD=flower-superlink`` runs the same tests against the reference, where the
tests marked ``reference_fails`` are expected failures.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.harness import (
    COMPLETED,
    FAILED,
    GRACEFUL_EXIT_LINE,
    RUN_FINISHED_LINE,
    STOPPED,
    FederationFactory,
    FlowerApp,
    FlowerCli,
    LocalFederation,
    Timeouts,
    start_long_run,
    strip_ansi,
    wait_until_gone,
)

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class CompletedRun:
    federation: LocalFederation
    cli: FlowerCli
    run_id: int
    status: str


@pytest.fixture(scope="module")
def completed_run(
    tmp_path_factory: pytest.TempPathFactory, superlink_command: list[str], flower_app: FlowerApp
) -> Iterator[CompletedRun]:
    """One run of the NumPy app on two SuperNodes with in-memory state, waited to its end."""
    with LocalFederation(tmp_path_factory.mktemp("completed-run"), superlink_command) as fed:
        cli = fed.cli(flower_app)
        try:
            run_id = cli.run()
            status = cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{fed.tails()}") from exc
        yield CompletedRun(fed, cli, run_id, status)


def test_numpy_app_on_two_supernodes_completes_in_memory(completed_run: CompletedRun) -> None:
    """Two SuperNodes + `flwr run` reach finished:completed with the default in-memory state,
    and the ServerApp's "Run finished" line reaches the SuperLink's output (inherited stdout)."""
    assert completed_run.status == COMPLETED
    superlink = completed_run.federation.require_superlink()
    superlink.wait_for_output(RUN_FINISHED_LINE, Timeouts.OUTPUT_APPEARS)
    runs = completed_run.cli.runs()
    assert [(run.run_id, run.status) for run in runs] == [(completed_run.run_id, COMPLETED)]


def test_flwr_log_show_prints_the_serverapp_log(completed_run: CompletedRun) -> None:
    """`flwr log <run_id> --show` prints the ServerApp's log up to its last lines."""
    output = strip_ansi(completed_run.cli.log_show(completed_run.run_id))
    assert "Start `flwr-serverapp` process" in output
    assert RUN_FINISHED_LINE in output
    assert "[SUMMARY]" in output


def test_sqlite_state_survives_a_graceful_restart(
    make_federation: FederationFactory,
    flower_app: FlowerApp,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With `--database <file>` a run completes; SIGTERM exits 0 with "SuperLink terminated
    gracefully."; a SuperLink restarted on the same file still lists the run finished:completed."""
    database = tmp_path_factory.mktemp("sqlite") / "state.db"
    federation = make_federation(superlink_args=["--database", str(database)])
    cli = federation.cli(flower_app)
    run_id = cli.run()
    cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES)
    federation.require_superlink().wait_for_output(RUN_FINISHED_LINE, Timeouts.OUTPUT_APPEARS)

    first = federation.require_superlink()
    assert first.stop(signal.SIGTERM, Timeouts.SUPERLINK_EXITS) == 0, first.tail()
    assert GRACEFUL_EXIT_LINE in first.output()
    assert database.is_file()

    federation.start_superlink()
    assert cli.status(run_id) == COMPLETED
    assert [run.run_id for run in cli.runs()] == [run_id]


def test_stop_marks_a_running_run_finished_stopped(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """`flwr stop` on a running 1000-round run succeeds and `flwr ls` shows finished:stopped."""
    federation = make_federation()
    cli = federation.cli(flower_app)
    run_id, _ = start_long_run(federation, cli)
    reply = cli.stop(run_id)
    assert reply["success"] is True
    assert cli.wait_for_status(run_id, STOPPED, Timeouts.RUN_STOPS) == STOPPED


@pytest.mark.reference_fails(
    reason="its flwr-serverapp keeps running the remaining rounds after a stop"
)
def test_stop_ends_the_serverapp_process_within_seconds(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """After `flwr stop`, the run's flwr-serverapp process is gone within a few seconds."""
    federation = make_federation()
    cli = federation.cli(flower_app)
    run_id, serverapps = start_long_run(federation, cli)
    cli.stop(run_id)
    wait_until_gone(serverapps, Timeouts.SERVERAPP_GONE)
    assert cli.status(run_id) == STOPPED


@pytest.mark.reference_fails(
    reason="it never notices that flwr-serverapp died; the run stays running"
)
def test_killed_serverapp_fails_its_run(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """SIGKILL of a running run's flwr-serverapp turns the run into finished:failed."""
    federation = make_federation()
    cli = federation.cli(flower_app)
    run_id, serverapps = start_long_run(federation, cli)
    for process in serverapps:
        os.kill(process.pid, signal.SIGKILL)
    assert cli.wait_for_status(run_id, FAILED, Timeouts.RUN_FAILS) == FAILED


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT], ids=lambda s: s.name
)
def test_signal_to_idle_superlink_exits_gracefully(
    make_federation: FederationFactory, signum: signal.Signals
) -> None:
    """SIGINT, SIGTERM and SIGQUIT to an idle SuperLink: exit status 0 and
    "SuperLink terminated gracefully." in its output."""
    superlink = make_federation(num_supernodes=0).require_superlink()
    assert superlink.stop(signum, Timeouts.SUPERLINK_EXITS) == 0, superlink.tail()
    assert GRACEFUL_EXIT_LINE in superlink.output()


@pytest.mark.reference_fails(reason="':memory:' opens a new empty database per call")
def test_sqlite_in_memory_database_completes_a_run(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """`--database :memory:` is one shared in-memory SQLite database: a run completes."""
    federation = make_federation(superlink_args=["--database", ":memory:"])
    cli = federation.cli(flower_app)
    run_id = cli.run()
    assert cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED


def test_supernodes_outlive_a_superlink_restart_on_sqlite(
    make_federation: FederationFactory,
    flower_app: FlowerApp,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Flower's test_reconnection.sh (sqlite): SuperNodes keep retrying while the SuperLink is
    down, carry on with their stored node ids after it restarts, and a run then completes."""
    database = tmp_path_factory.mktemp("reconnect") / "state.db"
    federation = make_federation(superlink_args=["--database", str(database)])
    first = federation.require_superlink()
    assert first.stop(signal.SIGTERM, Timeouts.SUPERLINK_EXITS) == 0, first.tail()
    federation.start_superlink()
    cli = federation.cli(flower_app)
    run_id = cli.run()
    assert cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED


def test_a_crashed_listener_exits_with_code_100_naming_it(
    make_federation: FederationFactory,
) -> None:
    """A supervised task that crashes (here the Fleet listener, whose port is taken) ends the
    process with status 1 and the exit-code-100 block naming the task and the cause."""
    federation = make_federation(num_supernodes=0)
    superlink = federation.require_superlink()
    assert superlink.stop(signal.SIGTERM, Timeouts.SUPERLINK_EXITS) == 0
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", federation.ports.fleet))
        blocker.listen()
        crashed = federation.start_superlink(wait=False)
        assert crashed.wait(Timeouts.SUPERLINK_EXITS) == 1, crashed.tail()
    output = strip_ansi(crashed.output())
    assert "Exit Code: 100" in output
    assert "An important background thread has crashed." in output
    assert "Task 'fleet-api' crashed: OSError" in output
