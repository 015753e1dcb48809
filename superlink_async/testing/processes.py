"""Real processes on 127.0.0.1: ports, waits, process discovery and managed child processes.

Every wait is a bounded poll; a ``ManagedProcess`` keeps its combined stdout and stderr in a
log file and ends its whole process tree when closed. Linux only: process discovery reads
``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, TypeVar

from superlink_async.runtime.children import DIE_WITH_PARENT

if TYPE_CHECKING:
    pass


T = TypeVar("T")

#: The only interface anything in a local federation binds to or dials.
LOOPBACK = "127.0.0.1"

#: How long a process gets to exit after SIGTERM before its process group is killed.
STOP_GRACE = 10.0


class StartsAndCloses:
    """A context manager over ``start()`` and ``close()``.

    A start that fails half-way closes what it had begun, so a failed fixture leaves no
    process behind.
    """

    def start(self) -> None:
        """Bring everything up; subclasses say what."""
        raise NotImplementedError

    def close(self) -> None:
        """End everything ``start`` began, even half of it; safe to call twice."""
        raise NotImplementedError

    def __enter__(self: StartedT) -> StartedT:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


StartedT = TypeVar("StartedT", bound=StartsAndCloses)


class WaitTimeout(TimeoutError):
    """A bounded wait ran out before its condition held."""


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``condition`` until it returns a truthy value (``True``, a non-empty list, …).

    Raises :class:`WaitTimeout` once ``timeout`` seconds have passed; the condition is always
    evaluated at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(min(interval, remaining))


# ---------------------------------------------------------------------------------------------
# Ports and environment

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not yet handed out by this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("could not find a free TCP port on 127.0.0.1")


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float, *, alive: Callable[[], bool] | None = None) -> None:
    """Wait until ``127.0.0.1:port`` accepts connections; fail early if ``alive()`` turns false."""

    def ready() -> bool:
        if alive is not None and not alive():
            raise RuntimeError(f"process exited before 127.0.0.1:{port} accepted connections")
        return port_is_open(port)

    wait_for(ready, timeout, interval=0.05, what=f"127.0.0.1:{port} to accept connections")


def venv_bin() -> Path:
    """The directory of the running interpreter, where flwr's console scripts are installed."""
    return Path(sys.executable).parent


def flower_env(flwr_home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of one Flower process: its own ``FLWR_HOME``, our venv first on PATH.

    The venv must come first so that children started by name (``flwr-serverapp`` launched by
    the SuperLink, ``flwr-clientapp`` by the SuperNode) are flwr 1.18.0 with ``click<8.2``.
    Output is unbuffered so that log files are complete when a process is killed.
    """
    env = dict(os.environ if base is None else base)
    flwr_home.mkdir(parents=True, exist_ok=True)
    env["FLWR_HOME"] = str(flwr_home)
    env["PATH"] = os.pathsep.join([str(venv_bin()), env.get("PATH", os.defpath)])
    env["PYTHONUNBUFFERED"] = "1"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["GRPC_VERBOSITY"] = "error"
    env["COLUMNS"] = "200"
    # Ray (flwr-simulation's engine) otherwise puts its own processes on the machine's network
    # address; this makes it use 127.0.0.1, like everything else here.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env.pop("FLWR_LOG_LEVEL", None)
    return env


def our_superlink_command() -> list[str]:
    """How to start this project's server: ``python -m superlink_async``."""
    return [sys.executable, "-m", "superlink_async"]


def resolve_command(command: Sequence[str] | str) -> list[str]:
    """Split a command line and resolve a bare program name against our venv, then PATH."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        raise ValueError("empty command")
    program = argv[0]
    if os.sep not in program:
        candidate = venv_bin() / program
        if candidate.exists():
            argv[0] = str(candidate)
    return argv


# ---------------------------------------------------------------------------------------------
# /proc


@dataclass(frozen=True)
class ProcessInfo:
    """One live process as seen in ``/proc`` (``start_time`` tells a reused pid apart)."""

    pid: int
    ppid: int
    #: The process group: a child of our scheduler leads one with what it started.
    pgid: int
    state: str
    start_time: int
    cmdline: tuple[str, ...]

    @property
    def command_line(self) -> str:
        """The argv joined by spaces."""
        return " ".join(self.cmdline)


def process_info(pid: int) -> ProcessInfo | None:
    """What ``/proc/<pid>`` says about a process, or ``None`` if there is no such process."""
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        raw_cmdline = (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    fields = stat.rpartition(")")[2].split()
    cmdline = tuple(part.decode(errors="replace") for part in raw_cmdline.split(b"\0") if part)
    return ProcessInfo(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        state=fields[0],
        start_time=int(fields[19]),
        cmdline=cmdline,
    )


def scan_processes() -> list[ProcessInfo]:
    """Every process currently visible in ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = process_info(int(entry.name))
            if info is not None:
                found.append(info)
    return found


def descendants(pid: int, processes: Sequence[ProcessInfo] | None = None) -> list[ProcessInfo]:
    """All live descendants of ``pid`` (children first)."""
    table = scan_processes() if processes is None else processes
    children: dict[int, list[ProcessInfo]] = {}
    for info in table:
        children.setdefault(info.ppid, []).append(info)
    result: list[ProcessInfo] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop(0)
        for child in children.get(parent, []):
            result.append(child)
            frontier.append(child.pid)
    return result


def is_running(info: ProcessInfo) -> bool:
    """Whether that very process (same pid *and* start time) exists and has not exited.

    A zombie has exited; it only waits for its parent to collect its status.
    """
    now = process_info(info.pid)
    return now is not None and now.start_time == info.start_time and now.state != "Z"


def kill_process(info: ProcessInfo) -> None:
    """SIGKILL the process, if it still runs (it may end meanwhile)."""
    if is_running(info):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(info.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Processes


class ManagedProcess:
    """A child in its own process group whose combined stdout and stderr go to a log file.

    It gets SIGKILLed by the kernel if this process dies first, so nothing outlives a crashed
    or killed test run.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=DIE_WITH_PARENT,  # noqa: PLW1509 - one async-signal-safe libc call
            )
        except BaseException:
            self._log.close()
            raise
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while it runs (negative: killed by that signal)."""
        return self.popen.poll()

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process (and children sharing its output) wrote so far."""
        self._log.flush()
        return self.log_path.read_bytes().decode(errors="replace")

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of :meth:`output`, headed by the process name and status."""
        text = "\n".join(self.output().splitlines()[-lines:])
        return f"===== {self.name} (pid {self.pid}, exit {self.returncode}) {self.log_path}\n{text}"

    def wait_for_output(self, text: str, timeout: float) -> None:
        """Wait until ``text`` appears in the output."""
        wait_for(
            lambda: text in self.output(),
            timeout,
            interval=0.1,
            what=f"{text!r} in the output of {self.name}",
        )

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process itself (not its group)."""
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; :class:`WaitTimeout` if it is still running afterwards."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeout(f"{self.name} still running after {timeout:.1f}s") from exc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_GRACE) -> int:
        """Send ``sig``, wait up to ``timeout`` seconds, then kill; return the exit status."""
        self.send_signal(sig)
        try:
            return self.wait(timeout)
        except WaitTimeout:
            self.kill()
            return self.popen.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the process group and every descendant, wherever it moved to."""
        family = descendants(self.pid) if self.alive() else []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for info in family:
            kill_process(info)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def close(self) -> None:
        """Kill what is left and close the log file; safe to call twice."""
        if self.alive():
            self.kill()
        else:
            # The leader is gone, but its group may live on (e.g. orphaned children).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._log.close()


@dataclass(frozen=True)
class SuperLinkPorts:
    """The four API ports of one SuperLink, all on 127.0.0.1."""

    serverappio: int
    fleet: int
    exec: int
    simulationio: int

    @classmethod
    def allocate(cls) -> SuperLinkPorts:
        """Four fresh free ports."""
        return cls(
            serverappio=free_port(), fleet=free_port(), exec=free_port(), simulationio=free_port()
        )

    def address(self, port: int) -> str:
        """``127.0.0.1:<port>``."""
        return f"{LOOPBACK}:{port}"

    def flags(self) -> list[str]:
        """The ``flower-superlink`` flags binding the APIs to these ports."""
        return [
            "--serverappio-api-address",
            self.address(self.serverappio),
            "--fleet-api-address",
            self.address(self.fleet),
            "--exec-api-address",
            self.address(self.exec),
            "--simulationio-api-address",
            self.address(self.simulationio),
        ]


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour codes (Flower colours every log line)."""
    return _ANSI.sub("", text)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
