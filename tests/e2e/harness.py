"""End-to-end harness: which SuperLink to test, timeouts, and helpers on top of the federation.

The process machinery (free ports, process groups, ``flwr new``, the ``flwr`` CLI, the
``LocalFederation``) lives in :mod:`superlink_async.testing`, because the ``make demo`` script
uses it too; it is re-exported here so that tests import from one place.

Which SuperLink runs: ``--superlink-cmd`` (pytest option, when ``tests/e2e`` is on the command
line), else ``$SUPERLINK_E2E_CMD``, else ours (``python -m superlink_async``). Both take a shell
word list, e.g. ``SUPERLINK_E2E_CMD=flower-superlink`` for the reference flwr 1.18.0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from superlink_async.testing import (
    FlowerApp,
    FlowerCli,
    FlowerCliError,
    LocalFederation,
    ManagedProcess,
    ProcessInfo,
    RunInfo,
    UnexpectedRunStatus,
    WaitTimeout,
    free_port,
    is_running,
    our_superlink_command,
    resolve_command,
    strip_ansi,
    wait_for,
)
from superlink_async.tls import CertificateFiles

__all__ = [
    "COMPLETED",
    "FAILED",
    "GRACEFUL_EXIT_LINE",
    "LONG_RUN_CONFIG",
    "RUN_FINISHED_LINE",
    "STOPPED",
    "FederationFactory",
    "FlowerApp",
    "FlowerCli",
    "FlowerCliError",
    "LocalFederation",
    "ManagedProcess",
    "ProcessInfo",
    "RunInfo",
    "Timeouts",
    "UnexpectedRunStatus",
    "WaitTimeout",
    "free_port",
    "is_reference",
    "resolve_superlink_command",
    "start_long_run",
    "strip_ansi",
    "wait_for",
    "wait_until_gone",
]

ENV_VAR = "SUPERLINK_E2E_CMD"

COMPLETED = "finished:completed"
STOPPED = "finished:stopped"
FAILED = "finished:failed"

#: Printed by the legacy ServerApp (the `flwr new` NumPy app) through the inherited stdout.
RUN_FINISHED_LINE = "Run finished"
#: Logged by the SuperLink on SIGINT/SIGTERM/SIGQUIT before exiting with status 0.
GRACEFUL_EXIT_LINE = "SuperLink terminated gracefully."

#: Enough rounds that a run is still going when the test acts on it (a round takes seconds).
LONG_RUN_CONFIG = {"num-server-rounds": 1000}

#: Rounds of the shared app: each round is a fit and an evaluate, ~9 s with 3 s polling.
APP_ROUNDS = 2


class Timeouts:
    """Upper bounds, in seconds (generous for a loaded 2-core machine; polls return early)."""

    #: A 2-round run from ``flwr run`` to ``finished:completed`` (~18 s on the reference).
    RUN_COMPLETES = 120.0
    #: From ``flwr run`` to ``running`` (the scheduler launches flwr-serverapp; ~2 s).
    RUN_STARTS = 60.0
    #: Until ``flwr-serverapp`` shows up as a process once the run is running.
    SERVERAPP_APPEARS = 10.0
    #: From ``flwr stop`` to ``finished:stopped`` in ``flwr ls``.
    RUN_STOPS = 15.0
    #: "Gone within a few seconds": a stopped run's flwr-serverapp.
    SERVERAPP_GONE = 5.0
    #: From SIGKILL of flwr-serverapp to ``finished:failed``.
    RUN_FAILS = 20.0
    #: From a signal to the SuperLink's exit.
    SUPERLINK_EXITS = 10.0
    #: Until a line reaches a process's log file.
    OUTPUT_APPEARS = 10.0


class FederationFactory(Protocol):
    """Starts a federation that the fixture closes after the test."""

    def __call__(
        self,
        *,
        num_supernodes: int = 2,
        superlink_args: Sequence[str] = (),
        fleet_api_types: Sequence[str] = ("grpc-rere",),
        tls: CertificateFiles | None = None,
    ) -> LocalFederation: ...


def resolve_superlink_command(option: str | None) -> list[str]:
    """The SuperLink command under test (option, then environment, then ours)."""
    chosen = option or os.environ.get(ENV_VAR, "").strip()
    return resolve_command(chosen) if chosen else our_superlink_command()


def is_reference(command: Sequence[str]) -> bool:
    """Whether ``command`` starts Flower's own ``flower-superlink``."""
    return any(Path(part).name == "flower-superlink" for part in command)


def start_long_run(federation: LocalFederation, cli: FlowerCli) -> tuple[int, list[ProcessInfo]]:
    """Start a 1000-round run, wait until it is running; return it and its flwr-serverapp."""
    run_id = cli.run(LONG_RUN_CONFIG)
    cli.wait_for_status(run_id, "running", Timeouts.RUN_STARTS)
    serverapps = wait_for(
        federation.serverapp_processes,
        Timeouts.SERVERAPP_APPEARS,
        interval=0.1,
        what=f"the flwr-serverapp process of run {run_id}",
    )
    return run_id, serverapps


def wait_until_gone(processes: Sequence[ProcessInfo], timeout: float) -> None:
    """Wait until none of ``processes`` runs any more (an unreaped zombie counts as gone)."""

    def all_gone() -> bool:
        return not any(is_running(info) for info in processes)

    try:
        wait_for(all_gone, timeout, interval=0.1, what="the processes to exit")
    except WaitTimeout as exc:
        still = [info for info in processes if is_running(info)]
        details = "; ".join(f"pid {info.pid}: {info.command_line}" for info in still)
        raise WaitTimeout(f"{exc}: still running: {details}") from None
