"""Start any SuperLink command on loopback ports and read its CPU and memory from /proc.

The started process is measured with every process it started (ours checks signatures
in worker processes): CPU and RSS are sums over that tree. With ``--isolation process``
no ``flwr-serverapp`` is among them: the driver plays it. :class:`Replicas` is one or more
such processes on one database, measured each on its own.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from superlink_async.testing import (
    LOOPBACK,
    WaitTimeout,
    descendants,
    free_port,
    wait_for_port,
)

Reading = TypeVar("Reading")
_START_SECONDS = 30.0
_STOP_SECONDS = 15.0
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    """A SuperLink under test: a label for the report and the command without flags."""

    label: str
    command: tuple[str, ...]
    #: Whether it accepts ``--database postgresql://…`` (flower-superlink 1.18.0 does not).
    postgres: bool = True


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5), counted after the parenthesised command name.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident set size now and its peak (``VmRSS``, ``VmHWM``), in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and of its live descendants (a PostgreSQL server's backends)."""
    return sum(_readings(pid, cpu_seconds))


def _readings(pid: int, measure: Callable[[int], Reading]) -> list[Reading]:
    """``measure`` of ``pid`` and of each live process below it, read in one scan of /proc."""
    readings = []
    for member in [pid, *(info.pid for info in descendants(pid))]:
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            readings.append(measure(member))
    return readings


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's descriptor limit toward ``wanted``; children inherit it.

    Raising the hard limit needs privileges; without them the soft limit goes up to the
    hard one. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
    target = min(max(wanted, soft), ceiling)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, PermissionError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SuperLinkProcess:
    """One SuperLink with ``--isolation process`` on fresh ports; a context manager.

    Its FAB store and log live in ``workdir``; ``database`` is its ``--database`` value
    (none: state in memory).
    """

    def __init__(self, target: Target, workdir: Path, *, database: str | None) -> None:
        self.target = target
        self.workdir = workdir
        self.log_path = workdir / "superlink.log"
        ports = [free_port() for _ in range(3)]
        self.exec_address, self.serverappio_address, self.fleet_address = (
            f"{LOOPBACK}:{port}" for port in ports
        )
        self._ports = ports
        self.argv = [
            *target.command,
            "--insecure",
            "--isolation",
            "process",
            "--exec-api-address",
            self.exec_address,
            "--serverappio-api-address",
            self.serverappio_address,
            "--fleet-api-address",
            self.fleet_address,
            "--storage-dir",
            str(workdir / "ffs"),
        ]
        if database is not None:
            self.argv += ["--database", database]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The measured process."""
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> None:
        """Launch the command and return once all three APIs accept connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "FLWR_HOME": str(self.workdir / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
        }
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + _START_SECONDS
        process = self._process
        try:
            for port in self._ports:
                wait_for_port(
                    port, deadline - time.monotonic(), alive=lambda: process.poll() is None
                )
        except (RuntimeError, WaitTimeout) as exc:
            self.stop()
            raise RuntimeError(
                f"{self.target.label} did not start; the end of its log:\n{self.log_tail()}"
            ) from exc

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; the process is gone afterwards."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def cpu_seconds(self) -> float:
        """CPU time the server and its live children have used so far."""
        return tree_cpu_seconds(self.pid)

    def memory_mib(self) -> tuple[float, float]:
        """RSS and peak RSS, each summed over the server and its children."""
        readings = _readings(self.pid, memory_mib)
        return sum(rss for rss, _ in readings), sum(peak for _, peak in readings)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's combined stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> SuperLinkProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class Replicas:
    """One or more SuperLink processes on one ``--database``; a context manager.

    All of them are started before the first caller gets them: a process that starts on a
    database fails the runs it finds running, so no run may exist yet. ``database_pid`` is
    the PostgreSQL server's, when the state is there, to read its CPU too.
    """

    def __init__(self, processes: list[SuperLinkProcess], database_pid: int | None = None) -> None:
        self.processes = processes
        self.database_pid = database_pid

    @property
    def first(self) -> SuperLinkProcess:
        """The replica the ServerApp driver talks to."""
        return self.processes[0]

    @property
    def fleet_addresses(self) -> tuple[str, ...]:
        """Every replica's Fleet API, in replica order."""
        return tuple(process.fleet_address for process in self.processes)

    def cpu_seconds(self) -> list[float]:
        """Each replica's CPU time so far (its process tree), in replica order."""
        return [process.cpu_seconds() for process in self.processes]

    def database_cpu_seconds(self) -> float | None:
        """The PostgreSQL server's CPU time so far (all its processes); None without one."""
        return None if self.database_pid is None else tree_cpu_seconds(self.database_pid)

    def memory_mib(self) -> tuple[float, float]:
        """RSS and peak RSS summed over every replica."""
        readings = [process.memory_mib() for process in self.processes]
        return sum(rss for rss, _ in readings), sum(peak for _, peak in readings)

    def __enter__(self) -> Replicas:
        with contextlib.ExitStack() as started:
            for process in self.processes:
                started.enter_context(process)
            started.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self.processes:
            process.stop()
