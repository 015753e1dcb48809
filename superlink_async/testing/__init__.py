"""Helpers for testing a SuperLink and the apps around it: real processes and in-process parts.

``processes``: ports, bounded waits, process discovery and managed child processes.
``federation``: a local Flower federation of real processes on 127.0.0.1 (a SuperLink, flwr
1.18.0 SuperNodes and the ``flwr`` CLI), for end-to-end tests and demos.
``clock``: a hand-moved clock for in-process tests of state, services and node auth.
"""

from __future__ import annotations

from superlink_async.testing.clock import FakeClock
from superlink_async.testing.federation import (
    FlowerApp,
    FlowerCli,
    FlowerCliError,
    LocalFederation,
    RunInfo,
    UnexpectedRunStatus,
)
from superlink_async.testing.processes import (
    LOOPBACK,
    ManagedProcess,
    ProcessInfo,
    SuperLinkPorts,
    WaitTimeout,
    descendants,
    flower_env,
    free_port,
    is_running,
    our_superlink_command,
    port_is_open,
    process_info,
    resolve_command,
    scan_processes,
    strip_ansi,
    venv_bin,
    wait_for,
    wait_for_port,
)

__all__ = [
    "LOOPBACK",
    "FakeClock",
    "FlowerApp",
    "FlowerCli",
    "FlowerCliError",
    "LocalFederation",
    "ManagedProcess",
    "ProcessInfo",
    "RunInfo",
    "SuperLinkPorts",
    "UnexpectedRunStatus",
    "WaitTimeout",
    "descendants",
    "flower_env",
    "free_port",
    "is_running",
    "our_superlink_command",
    "port_is_open",
    "process_info",
    "resolve_command",
    "scan_processes",
    "strip_ansi",
    "venv_bin",
    "wait_for",
    "wait_for_port",
]
