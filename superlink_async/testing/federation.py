"""A local Flower federation of real processes on 127.0.0.1, for end-to-end tests and demos.

Everything here drives *processes* — a SuperLink (ours or the reference ``flower-superlink``),
real flwr 1.18.0 SuperNodes and the ``flwr`` CLI — exactly as a user would from a shell, so it
imports nothing from ``flwr`` and works against any SuperLink command line that accepts the
``flower-superlink`` flags. Each process gets its own ``FLWR_HOME`` and a log file holding its
combined stdout and stderr (for the SuperLink that includes the ``flwr-serverapp`` or
``flwr-simulation`` children, which inherit its output). Every wait is a bounded poll, and
:meth:`LocalFederation.close` ends every process it started, including the children they
spawned.

Linux only: process discovery reads ``/proc``.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superlink_async.config import (
    FLEET_GRPC_ADAPTER,
    FLEET_GRPC_RERE,
    FLEET_REST,
    SIMULATION_EXECUTOR,
)

if TYPE_CHECKING:
    from superlink_async.tls import CertificateFiles

from superlink_async.testing.processes import (
    LOOPBACK,
    STOP_GRACE,
    ManagedProcess,
    ProcessInfo,
    StartsAndCloses,
    SuperLinkPorts,
    WaitTimeout,
    descendants,
    flower_env,
    free_port,
    kill_process,
    scan_processes,
    venv_bin,
    wait_for,
    wait_for_port,
)

#: Upper bound for any single ``flwr`` CLI invocation (they take about a second).
CLI_TIMEOUT = 60.0

#: Seconds between two ``flwr ls`` polls while waiting for a run status.
STATUS_POLL_INTERVAL = 0.5

_FINISHED = "finished"


class FlowerCliError(RuntimeError):
    """A ``flwr`` command failed (non-zero exit status or ``"success": false``)."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{shlex.join(argv)} exited with {returncode}\n"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


class UnexpectedRunStatus(AssertionError):
    """A run reached a final status other than the one being waited for."""


# ---------------------------------------------------------------------------------------------
# The Flower App and the CLI


@dataclass(frozen=True)
class FlowerApp:
    """A Flower App directory created by ``flwr new``, with an ``e2e`` federation added.

    The federation's address is a placeholder: :class:`FlowerCli` passes the real Exec address
    of its SuperLink with ``--federation-config``, so one app serves any number of federations.
    """

    path: Path
    federation: str = "e2e"

    @classmethod
    def create(
        cls,
        parent: Path,
        name: str = "e2eapp",
        *,
        framework: str = "NumPy",
        rounds: int = 2,
        federation: str = "e2e",
        timeout: float = CLI_TIMEOUT,
    ) -> FlowerApp:
        """Run ``flwr new`` in ``parent`` (offline), then set the rounds and add the federation."""
        parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(venv_bin() / "flwr"),
            "new",
            name,
            "--framework",
            framework,
            "--username",
            "test",
        ]
        env = flower_env(parent / f".flwr-home-{name}")
        done = subprocess.run(
            argv, cwd=parent, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        app_dir = parent / name
        if done.returncode != 0 or not (app_dir / "pyproject.toml").is_file():
            raise FlowerCliError(argv, done.returncode, done.stdout, done.stderr)
        app = cls(path=app_dir, federation=federation)
        app.configure(rounds=rounds)
        return app

    @property
    def pyproject(self) -> Path:
        """The app's ``pyproject.toml``."""
        return self.path / "pyproject.toml"

    def configure(self, *, rounds: int) -> None:
        """Set ``num-server-rounds`` and make sure the federation table exists."""
        text = self.pyproject.read_text()
        text, count = re.subn(
            r"(?m)^num-server-rounds\s*=\s*\d+\s*$", f"num-server-rounds = {rounds}", text
        )
        if count != 1:
            raise ValueError(f"no num-server-rounds setting in {self.pyproject}")
        if _federation_header(self.federation) not in text:
            text += _federation_table(self.federation, "insecure = true")
        self.pyproject.write_text(text)

    def with_simulation_federation(self, num_supernodes: int | None = 10) -> FlowerApp:
        """The app seen through a federation for the simulation executor.

        ``num_supernodes`` (None: left out, which that executor refuses) SuperNodes are
        simulated by Ray with small resources: one CPU, one client actor, no dashboard, a
        100 MB object store (Ray's default maps 30% of the memory into /dev/shm).
        """
        name = f"{self.federation}-sim-{num_supernodes}"
        if _federation_header(name) not in (text := self.pyproject.read_text()):
            options = [
                "options.backend.client_resources.num_cpus = 1",
                "options.backend.init_args.num_cpus = 1",
                "options.backend.init_args.include_dashboard = false",
                "options.backend.init_args.object_store_memory = 100_000_000",
            ]
            if num_supernodes is not None:
                options.insert(0, f"options.num-supernodes = {num_supernodes}")
            text += _federation_table(name, "\n".join(["insecure = true", *options]))
            self.pyproject.write_text(text)
        return replace(self, federation=name)

    def with_tls_federation(self, root_certificates: Path) -> FlowerApp:
        """The app seen through a federation that dials TLS, trusting ``root_certificates``.

        ``flwr --federation-config`` only overrides keys the table already has, so the CA path
        is written into ``pyproject.toml`` (a later call with another CA rewrites it). The
        federation's ``options`` (e.g. ``num-supernodes``) come along.
        """
        name = f"{self.federation}-tls"
        setting = f"root-certificates = {_toml(str(root_certificates))}"
        text = self.pyproject.read_text()
        if _federation_header(name) in text:
            text = re.sub(r"(?m)^root-certificates = .*$", lambda _: setting, text)
        else:
            options = _federation_options(text, self.federation)
            text += _federation_table(name, "\n".join([setting, *options]))
        self.pyproject.write_text(text)
        return replace(self, federation=name)


def _federation_header(name: str) -> str:
    return f"[tool.flwr.federations.{name}]"


def _federation_options(pyproject: str, name: str) -> list[str]:
    """The ``options.…`` lines of one federation table in ``pyproject``."""
    table = pyproject.partition(_federation_header(name))[2].split("\n[", 1)[0]
    return [line for line in table.splitlines() if line.startswith("options.")]


def _federation_table(name: str, security: str) -> str:
    """A federation with a placeholder address: :class:`FlowerCli` passes the real one."""
    return (
        f"\n{_federation_header(name)}\n"
        f'address = "{LOOPBACK}:9093"  # replaced with --federation-config per call\n'
        f"{security}\n"
    )


@dataclass(frozen=True)
class RunInfo:
    """One row of ``flwr ls --format json``."""

    run_id: int
    status: str
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        """Whether the run reached a final status (``finished:<sub-status>``)."""
        return self.status.startswith(_FINISHED)


def _json_document(text: str) -> Any:
    """The JSON object in ``text``, ignoring anything printed before it."""
    start = text.find("{")
    if start < 0:
        raise ValueError(f"no JSON object in {text!r}")
    return json.loads(text[start:])


class FlowerCli:
    """The ``flwr`` CLI pointed at one SuperLink's Exec API, with its own ``FLWR_HOME``."""

    def __init__(self, app: FlowerApp, exec_address: str, flwr_home: Path) -> None:
        self.app = app
        self.exec_address = exec_address
        self.env = flower_env(flwr_home)
        self.program = str(venv_bin() / "flwr")

    def _target(self) -> list[str]:
        return [
            str(self.app.path),
            self.app.federation,
            "--federation-config",
            f'address="{self.exec_address}"',
        ]

    def invoke(
        self, *args: str, timeout: float = CLI_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``flwr <args>``; with ``check``, raise :class:`FlowerCliError` on failure."""
        argv = [self.program, *args]
        try:
            done = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeout(f"{shlex.join(argv)} did not finish within {timeout}s") from exc
        if check and done.returncode != 0:
            raise FlowerCliError(argv, done.returncode, done.stdout, done.stderr)
        return done

    def _invoke_json(self, *args: str, timeout: float = CLI_TIMEOUT) -> Mapping[str, Any]:
        done = self.invoke(*args, "--format", "json", timeout=timeout, check=False)
        try:
            document = _json_document(done.stdout)
        except ValueError:
            document = None
        if done.returncode != 0 or not isinstance(document, dict) or not document.get("success"):
            raise FlowerCliError(
                [self.program, *args, "--format", "json"], done.returncode, done.stdout, done.stderr
            )
        return document

    def run(self, run_config: Mapping[str, int | float | str | bool] | None = None) -> int:
        """``flwr run`` the app, optionally overriding run config values; return the run id."""
        args = ["run", *self._target()]
        if run_config:
            args += ["--run-config", " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())]
        return int(self._invoke_json(*args)["run-id"])

    def runs(self) -> list[RunInfo]:
        """``flwr ls``: every run, oldest first."""
        return self._runs(self._invoke_json("ls", *self._target()))

    def runs_table(self) -> str:
        """``flwr ls`` in its default (table) format, for people to read."""
        return self.invoke("ls", *self._target()).stdout

    def run_info(self, run_id: int) -> RunInfo | None:
        """``flwr ls --run-id``: one run, or ``None`` if the SuperLink does not know it."""
        document = self._invoke_json("ls", *self._target(), "--run-id", str(run_id))
        return next((run for run in self._runs(document) if run.run_id == run_id), None)

    @staticmethod
    def _runs(document: Mapping[str, Any]) -> list[RunInfo]:
        return [
            RunInfo(run_id=int(row["run-id"]), status=str(row["status"]), raw=row)
            for row in document.get("runs", [])
        ]

    def status(self, run_id: int) -> str | None:
        """The run's status as ``flwr ls`` shows it (``running``, ``finished:completed``, …)."""
        info = self.run_info(run_id)
        return None if info is None else info.status

    def wait_for_status(self, run_id: int, expected: str | Collection[str], timeout: float) -> str:
        """Poll ``flwr ls`` until the run shows one of the ``expected`` statuses.

        Fails early with :class:`UnexpectedRunStatus` if the run reaches a different final
        (``finished:…``) status, since it can never leave it.
        """
        wanted = {expected} if isinstance(expected, str) else set(expected)
        seen: list[str | None] = []

        def reached() -> str | None:
            status = self.status(run_id)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in wanted:
                return status
            if status is not None and status.startswith(_FINISHED):
                raise UnexpectedRunStatus(
                    f"run {run_id} is {status}, expected {sorted(wanted)} (seen {seen})"
                )
            return None

        try:
            return wait_for(
                reached,
                timeout,
                interval=STATUS_POLL_INTERVAL,
                what=f"run {run_id} to be {sorted(wanted)}",
            )
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc} (statuses seen: {seen})") from None

    def log_show(self, run_id: int) -> str:
        """``flwr log --show``: the run's logs so far, as one printout."""
        return self.invoke("log", str(run_id), *self._target(), "--show").stdout

    def log_stream_argv(self, run_id: int) -> list[str]:
        """The argv of ``flwr log`` (streaming), which ends when the run finishes."""
        return [self.program, "log", str(run_id), *self._target(), "--stream"]

    def stop(self, run_id: int) -> Mapping[str, Any]:
        """``flwr stop``; raises :class:`FlowerCliError` unless the SuperLink stopped it."""
        return self._invoke_json("stop", str(run_id), *self._target())


def _toml(value: int | float | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


# ---------------------------------------------------------------------------------------------
# The federation


class LocalFederation(StartsAndCloses):
    """One SuperLink and N SuperNodes on 127.0.0.1, each with its own ``FLWR_HOME`` and log.

    Plaintext (``--insecure``) unless ``tls`` is given: then the SuperLink serves with those
    files and the SuperNodes and the CLI trust their CA. With ``simulation`` the SuperLink runs
    the simulation executor (Exec and SimulationIo APIs, ``flwr-simulation`` per run) and no
    SuperNode is started.

    Use it as a context manager (or call :meth:`close`): whatever happens, every process it
    started and every descendant of them is gone afterwards.
    """

    def __init__(
        self,
        workdir: Path,
        superlink_command: Sequence[str],
        *,
        num_supernodes: int = 2,
        superlink_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
        tls: CertificateFiles | None = None,
        fleet_api_types: Sequence[str] = (FLEET_GRPC_RERE,),
        simulation: bool = False,
    ) -> None:
        self.workdir = workdir
        self.simulation = simulation
        self.tls = tls
        #: Fleet transports the SuperLink serves; SuperNodes take them in turn.
        self.fleet_api_types = list(fleet_api_types)
        self.superlink_command = list(superlink_command)
        self.superlink_args = list(superlink_args)
        self.num_supernodes = 0 if simulation else num_supernodes
        self.ready_timeout = ready_timeout
        self.ports = SuperLinkPorts.allocate()
        #: One Fleet port per transport; the first is ``ports.fleet``.
        self.fleet_ports = {
            kind: self.ports.fleet if index == 0 else free_port()
            for index, kind in enumerate(self.fleet_api_types)
        }
        self.superlink: ManagedProcess | None = None
        #: Every SuperLink process started, in order (a restart adds one).
        self.superlinks: list[ManagedProcess] = []
        self.supernodes: list[ManagedProcess] = []
        self._closed = False
        workdir.mkdir(parents=True, exist_ok=True)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the SuperLink, wait until it listens, then start the SuperNodes."""
        self.start_superlink()
        for _ in range(self.num_supernodes):
            self.start_supernode()

    @property
    def superlink_argv(self) -> list[str]:
        """The SuperLink's full command line."""
        return [
            *self.superlink_command,
            *self._superlink_security_flags(),
            *self.ports.flags(),
            *self._fleet_flags(),
            *(["--executor", SIMULATION_EXECUTOR] if self.simulation else []),
            "--storage-dir",
            str(self.workdir / "superlink-ffs"),
            *self.superlink_args,
        ]

    def _fleet_flags(self) -> list[str]:
        """Several Fleet transports (superlink-async only); later flags override ports.flags()."""
        if self.fleet_api_types == [FLEET_GRPC_RERE]:
            return []
        addresses = ",".join(self.ports.address(port) for port in self.fleet_ports.values())
        return ["--fleet-api-type", ",".join(self.fleet_ports), "--fleet-api-address", addresses]

    def _superlink_security_flags(self) -> list[str]:
        if self.tls is None:
            return ["--insecure"]
        return [
            "--ssl-ca-certfile",
            str(self.tls.ca_certfile),
            "--ssl-certfile",
            str(self.tls.certfile),
            "--ssl-keyfile",
            str(self.tls.keyfile),
        ]

    def start_superlink(self, *, wait: bool = True) -> ManagedProcess:
        """Start a SuperLink (again, after a stop: same ports, state and FFS).

        With ``wait`` (the default) return once it listens; without, at once (for tests of a
        SuperLink that is expected to fail at startup).
        """
        if self.superlink is not None and self.superlink.alive():
            raise RuntimeError("the SuperLink is already running")
        index = len(self.superlinks)
        process = ManagedProcess(
            "superlink" if index == 0 else f"superlink-{index}",
            self.superlink_argv,
            self.workdir / ("superlink.log" if index == 0 else f"superlink-{index}.log"),
            flower_env(self.workdir / "superlink-home"),
            cwd=self.workdir,
        )
        self.superlink = process
        self.superlinks.append(process)
        if wait:
            self.wait_until_ready()
        return process

    def wait_until_ready(self) -> None:
        """Poll the ports it serves (Exec, then ServerAppIo and Fleet, or SimulationIo)."""
        process = self.require_superlink()
        deadline = time.monotonic() + self.ready_timeout
        ports = (
            (self.ports.simulationio,)
            if self.simulation
            else (self.ports.serverappio, *self.fleet_ports.values())
        )
        try:
            for port in (self.ports.exec, *ports):
                wait_for_port(port, max(deadline - time.monotonic(), 0.0), alive=process.alive)
        except (RuntimeError, WaitTimeout) as exc:
            raise RuntimeError(f"SuperLink did not become ready: {exc}\n{process.tail()}") from exc

    def start_supernode(
        self, extra_args: Sequence[str] = (), *, fleet_address: str | None = None
    ) -> ManagedProcess:
        """Start one more ``flower-supernode`` with its own ClientAppIo port and ``FLWR_HOME``.

        It dials our Fleet port, or ``fleet_address`` (e.g. a load balancer in front of it).
        """
        index = len(self.supernodes)
        kind = self.fleet_api_types[index % len(self.fleet_api_types)]
        address = fleet_address or self.ports.address(self.fleet_ports[kind])
        transport = {
            FLEET_GRPC_RERE: [],
            FLEET_GRPC_ADAPTER: ["--grpc-adapter"],
            FLEET_REST: ["--rest"],
        }[kind]
        if kind == FLEET_REST:
            address = f"{'https' if self.tls else 'http'}://{address}"
        argv = [
            str(venv_bin() / "flower-supernode"),
            *(["--root-certificates", str(self.tls.ca_certfile)] if self.tls else ["--insecure"]),
            *transport,
            "--superlink",
            address,
            "--clientappio-api-address",
            f"{LOOPBACK}:{free_port()}",
            *extra_args,
        ]
        process = ManagedProcess(
            f"supernode-{index}",
            argv,
            self.workdir / f"supernode-{index}.log",
            flower_env(self.workdir / f"supernode-{index}-home"),
            cwd=self.workdir,
        )
        self.supernodes.append(process)
        return process

    def require_superlink(self) -> ManagedProcess:
        """The current SuperLink process."""
        if self.superlink is None:
            raise RuntimeError("no SuperLink was started")
        return self.superlink

    def cli(self, app: FlowerApp) -> FlowerCli:
        """The ``flwr`` CLI for ``app`` against this federation's Exec API."""
        if self.tls is not None:
            app = app.with_tls_federation(self.tls.ca_certfile)
        return FlowerCli(app, self.ports.address(self.ports.exec), self.workdir / "cli-home")

    def processes(self) -> list[ManagedProcess]:
        """Every process started so far, SuperNodes first."""
        return [*self.supernodes, *self.superlinks]

    def serverapp_processes(self) -> list[ProcessInfo]:
        """The live ``flwr-serverapp`` processes serving this SuperLink.

        Either the real ``flwr-serverapp`` program dialling our ServerAppIo port (wherever it
        sits in the process tree), or a ``multiprocessing`` child of the SuperLink (how the
        reference runs ``flwr_serverapp()``; its resource tracker is not counted).
        """
        table = [info for info in scan_processes() if info.state != "Z"]
        port = f":{self.ports.serverappio}"
        found = {
            info.pid: info
            for info in table
            if any(Path(arg).name == "flwr-serverapp" for arg in info.cmdline)
            and any(arg.endswith(port) for arg in info.cmdline)
        }
        superlink = self.superlink
        if superlink is not None and superlink.alive():
            for info in descendants(superlink.pid, table):
                if "multiprocessing.spawn" in info.command_line:
                    found[info.pid] = info
        return sorted(found.values(), key=lambda info: info.pid)

    def simulation_processes(self) -> list[ProcessInfo]:
        """The live ``flwr-simulation`` processes dialling this SuperLink's SimulationIo port."""
        port = f":{self.ports.simulationio}"
        return sorted(
            (
                info
                for info in scan_processes()
                if info.state != "Z"
                and any(Path(arg).name == "flwr-simulation" for arg in info.cmdline)
                and any(arg.endswith(port) for arg in info.cmdline)
            ),
            key=lambda info: info.pid,
        )

    def tails(self, lines: int = 60) -> str:
        """The end of every process log, for failure reports."""
        return "\n".join(process.tail(lines) for process in self.processes())

    def close(self) -> None:
        """SIGTERM all SuperNodes, then the SuperLink; kill anything that lingers."""
        if self._closed:
            return
        self._closed = True
        everyone = self.processes()
        family: list[ProcessInfo] = []
        for process in everyone:
            if process.alive():
                family += descendants(process.pid)
        try:
            _stop_all(self.supernodes)
            _stop_all(self.superlinks)
        finally:
            for process in everyone:
                process.close()
            for info in family:
                kill_process(info)


def _stop_all(processes: Sequence[ManagedProcess], timeout: float = STOP_GRACE) -> None:
    """SIGTERM all at once, then wait for each (killing those still alive at the deadline)."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.0))
        except WaitTimeout:
            process.kill()
