"""The SuperLink: owns config, state, FAB storage, listeners and scheduler.

Use it inside another asyncio application::

    async with SuperLink(config) as link:
        ...  # the server runs while this block runs

With the deployment executor (the default) it serves the Exec, ServerAppIo and Fleet APIs and
launches ``flwr-serverapp`` per run; with the simulation executor it serves the Exec and
SimulationIo APIs only and launches ``flwr-simulation`` per run.

The SuperLink is one replica among those sharing its ``--database`` (``runtime.replica``):
it holds a lease there, renewed in the background, and reaps the replicas that lost theirs.

Leaving the block shuts down in the stages of ``runtime.shutdown``, each bounded there:
refuse new calls and drain those in flight (for ``config.shutdown_grace``), end the per-run
children, hand this replica's runs over, close the listeners, stop the workers and
background tasks, then close the state.
If a component crashes (or returns), the block is cancelled and ``SuperLinkExit`` with code
100 (naming the task and the cause) is raised from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

import anyio

from superlink_async._internals import check_all
from superlink_async.config import (
    FLEET_GRPC_ADAPTER,
    FLEET_GRPC_RERE,
    FLEET_REST,
    ISOLATION_SUBPROCESS,
    Address,
    AddressError,
    Config,
    FleetListener,
)
from superlink_async.exit_codes import ExitCode, SuperLinkExit
from superlink_async.logs import logger
from superlink_async.loop_lag import LoopLag
from superlink_async.metrics import Metrics, metrics_app
from superlink_async.runtime.replica import ReplicaLease
from superlink_async.runtime.scheduler import SERVERAPP, SIMULATION, RunScheduler
from superlink_async.runtime.shutdown import (
    CHILDREN,
    DRAIN,
    HANDOVER,
    LISTENERS,
    REST_SHUTDOWN_TIMEOUT,
    STATE,
    WORKERS,
    stage,
)
from superlink_async.runtime.signature_workers import WorkerSignatures, default_workers
from superlink_async.runtime.supervisor import Supervisor, TaskFunction
from superlink_async.services.exec import ExecService
from superlink_async.services.fleet import FleetService
from superlink_async.services.node_auth import NodeAuthenticator
from superlink_async.services.runs import RunEvents
from superlink_async.services.serverappio import ServerAppIoService
from superlink_async.services.simulationio import SimulationIoService
from superlink_async.state.base import LinkState, StateUnavailableError
from superlink_async.state.factory import fab_store_for, open_state
from superlink_async.tls import ListenerTls
from superlink_async.transports.gate import Admission, CallGate
from superlink_async.transports.grpc.adapter import GrpcAdapterServicer
from superlink_async.transports.grpc.server import BULK, serve_grpc
from superlink_async.transports.grpc.servicers import (
    ExecServicer,
    FleetServicer,
    ServerAppIoServicer,
    SimulationIoServicer,
)
from superlink_async.transports.health import HealthProbe
from superlink_async.transports.http import serve_http
from superlink_async.transports.rest import fleet_rest_app

#: An aiohttp application as a listener: its runner's shutdown is bounded by the table's.
_serve_http = partial(serve_http, shutdown_timeout=REST_SHUTDOWN_TIMEOUT)

#: How often expired messages are swept from the state (the reference never does).
PURGE_INTERVAL = 60.0


class SuperLink:
    """One SuperLink in this event loop; see the module docstring."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._stack = AsyncExitStack()
        self._metrics = Metrics(config.replica_id) if config.metrics_address else None
        self._lag = LoopLag()
        self._gate = CallGate(
            config.max_message_bytes,
            self._metrics,
            lag=self._lag,
            admission=Admission(config.overload_lag, config.max_fleet_in_flight),
        )
        if self._metrics is not None:
            gate = self._gate
            self._metrics.watch_load(lambda: gate.lag.level, lambda: gate.fleet_in_flight)
        self._supervisor: Supervisor | None = None
        self._state: LinkState | None = None
        self._lease: ReplicaLease | None = None

    @property
    def state(self) -> LinkState:
        """The live state store (for embedding applications and tests)."""
        if self._state is None:
            raise RuntimeError("SuperLink is not running")
        return self._state

    def start_soon(self, name: str, function: TaskFunction, *args: Any) -> None:
        """Run a host task under the same supervision as the server's own components.

        If it raises or returns, the whole SuperLink stops and exits with code 100 naming
        ``name``. A shutdown cancels it in the workers stage, after the listeners closed.
        """
        if self._supervisor is None:
            raise RuntimeError("SuperLink is not running")
        self._supervisor.start_soon(name, function, *args, stage=WORKERS.name)

    async def __aenter__(self) -> SuperLink:
        check_all()  # the libraries' internals we reach into, before anything binds
        addresses = _parse_addresses(self.config)
        self.config.check()  # the CLI's check: a Config that passed it is not checked again
        await self._stack.__aenter__()
        try:
            await self._start(*addresses)
        except BaseException as exc:
            await self._stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        with anyio.CancelScope(shield=True):
            await self._stop_in_stages()
        return await self._stack.__aexit__(exc_type, exc, traceback)

    async def _stop_in_stages(self) -> None:
        """The stages of ``runtime.shutdown`` up to the state's, which the stack closes last.

        After a crash every task is being cancelled already; the stages then only wait.
        """
        grace = self.config.shutdown_grace
        with stage(DRAIN, grace):
            if not self._gate.draining and not await self._gate.drain(grace):
                logger.warning(
                    "%d call(s) still in flight after %.1fs; closing anyway",
                    self._gate.in_flight,
                    grace,
                )
        supervisor = self._require_supervisor()
        for each in (CHILDREN, HANDOVER, LISTENERS, WORKERS):
            with stage(each):
                await supervisor.stop(each.name)
                if each is HANDOVER and self._lease is not None:
                    await self._lease.hand_over()  # its renewals stopped with the stage's tasks

    async def _start(self, exec_address: Address, appio_address: Address) -> None:
        parts = await self._open_parts(appio_address)
        self._supervisor = await self._stack.enter_async_context(Supervisor())
        await self._supervisor.start("loop-lag", self._lag.run, stage=WORKERS.name)
        await self._start_exec(parts, exec_address)
        await self._start_appio(parts, appio_address)
        if parts.signature_workers is not None:
            await self._supervisor.start(
                "signature-workers", parts.signature_workers.run, stage=WORKERS.name
            )
        if not self.config.simulation:
            for listener in self.config.fleet_listeners():
                await self._start_fleet(parts, listener)
        await self._start_background(parts)

    async def _open_parts(self, appio_address: Address) -> _Parts:
        """Open the state and build the services every listener delegates to."""
        config = self.config
        tls = config.tls  # loaded by check(): unusable certificates left the database untouched
        closing = AsyncExitStack()
        state = await closing.enter_async_context(
            open_state(
                config.database,
                self._clock,
                check_integrity=config.check_database,
                pool_size=config.database_pool_size,
            )
        )
        self._stack.push_async_callback(_close_state_last, closing)
        fabs = fab_store_for(config.database, state, config.storage_dir)
        if self._metrics is not None:
            state = self._metrics.timed_state(state)
        self._state = state
        events = RunEvents()
        scheduler = _scheduler(config, state, events, appio_address)
        lease = ReplicaLease(
            state,
            events,
            config.replica_id,
            config.replica_lease,
            on_retaken=scheduler.reservation_lost if scheduler else None,
        )
        await lease.register()
        self._lease = lease
        logger.info("SuperLink replica %s (lease %g s)", config.replica_id, config.replica_lease)
        signature_workers = _signature_workers(config, self._lag)
        node_auth = await _node_authenticator(config, state, self._clock, signature_workers)
        on_claim = scheduler.run_claimed if scheduler else _ignore_claim
        appio_type = SimulationIoService if config.simulation else ServerAppIoService
        return _Parts(
            tls=tls,
            state=state,
            events=events,
            lease=lease,
            scheduler=scheduler,
            exec=ExecService(
                state,
                fabs,
                events,
                on_stop=scheduler.stop_run if scheduler else _nothing_to_stop,
                clock=self._clock,
                simulation=config.simulation,
            ),
            appio=appio_type(
                state,
                fabs,
                events,
                replica_id=config.replica_id,
                on_claim=on_claim,
                clock=self._clock,
            ),
            fleet=FleetService(state, fabs, clock=self._clock),
            node_auth=node_auth,
            signature_workers=signature_workers,
            health=HealthProbe(state, self._gate),
        )

    async def _start_exec(self, parts: _Parts, address: Address) -> None:
        await self._require_supervisor().start(
            "exec-api",
            partial(serve_grpc, profile=BULK),
            parts.with_health(ExecServicer(parts.exec, self._gate)),
            address,
            "Flower Deployment Engine: Starting Exec API",
            parts.tls.grpc,
            self._gate,
            stage=LISTENERS.name,
        )

    async def _start_appio(self, parts: _Parts, address: Address) -> None:
        """SimulationIo (always plaintext, as the reference) or ServerAppIo."""
        if isinstance(parts.appio, SimulationIoService):
            await self._require_supervisor().start(
                "simulationio-api",
                partial(serve_grpc, profile=BULK),
                parts.with_health(SimulationIoServicer(parts.appio, self._gate)),
                address,
                "Flower Simulation Engine: Starting SimulationIo API",
                None,
                self._gate,
                stage=LISTENERS.name,
            )
            return
        await self._require_supervisor().start(
            "serverappio-api",
            partial(serve_grpc, profile=BULK),
            parts.with_health(ServerAppIoServicer(parts.appio, self._gate)),
            address,
            "Flower ECE: Starting ServerAppIo API (gRPC-rere)",
            parts.tls.serverappio,
            self._gate,
            stage=LISTENERS.name,
        )

    async def _start_fleet(self, parts: _Parts, listener: FleetListener) -> None:
        """One Fleet transport; several may run side by side over the same services."""
        if listener.api_type == FLEET_GRPC_RERE:
            await self._require_supervisor().start(
                "fleet-api",
                serve_grpc,
                parts.with_health(FleetServicer(parts.fleet, self._gate, parts.node_auth)),
                listener.address,
                "Flower ECE: Starting Fleet API (gRPC-rere)",
                parts.tls.grpc,
                self._gate,
                stage=LISTENERS.name,
            )
        elif listener.api_type == FLEET_GRPC_ADAPTER:
            await self._require_supervisor().start(
                "fleet-grpc-adapter-api",
                serve_grpc,
                parts.with_health(GrpcAdapterServicer(parts.fleet, self._gate)),
                listener.address,
                "Flower ECE: Starting Fleet API (GrpcAdapter)",
                parts.tls.grpc,
                self._gate,
                stage=LISTENERS.name,
            )
        elif listener.api_type == FLEET_REST:
            await self._require_supervisor().start(
                "fleet-rest-api",
                partial(_serve_http, yields=True),
                fleet_rest_app(parts.fleet, self._gate, parts.health.healthy),
                listener.address,
                "Starting Flower REST server",
                parts.tls.rest,
                self._gate,
                stage=LISTENERS.name,
            )

    async def _start_background(self, parts: _Parts) -> None:
        """Tasks that serve no port: lease, change listener, scheduler, message purger."""
        supervisor = self._require_supervisor()
        await supervisor.start("replica-lease", parts.lease.run, stage=HANDOVER.name)
        # Other replicas' writes wake this one's waiters (log streams, the scheduler).
        supervisor.start_soon(
            "state-listener", parts.state.listen, parts.events.notify, stage=WORKERS.name
        )
        if parts.scheduler is not None:
            await supervisor.start("scheduler", parts.scheduler.run, stage=CHILDREN.name)
        supervisor.start_soon(
            "message-purger", _purge_expired_messages, parts.state, stage=WORKERS.name
        )
        if self._metrics is not None and self.config.metrics_address:
            metrics, scheduler = self._metrics, parts.scheduler

            async def refresh() -> None:
                await metrics.refresh(parts.state, scheduler)

            await supervisor.start(
                "metrics",
                _serve_http,
                metrics_app(metrics, refresh),
                Address.parse(self.config.metrics_address),
                "Serving Prometheus metrics at /metrics",
                None,
                self._gate,
                stage=LISTENERS.name,
            )

    def _require_supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise RuntimeError("SuperLink is not running")
        return self._supervisor


@dataclass(frozen=True)
class _Parts:
    """What the listeners and background tasks of one SuperLink share."""

    tls: ListenerTls
    state: LinkState
    #: Wakes waiters on run changes: this process's, and other replicas' (``listen``).
    events: RunEvents
    lease: ReplicaLease
    scheduler: RunScheduler | None
    exec: ExecService
    #: The API the per-run processes dial: ServerAppIo, or SimulationIo for simulations.
    appio: ServerAppIoService | SimulationIoService
    fleet: FleetService
    node_auth: NodeAuthenticator
    #: Worker processes checking node-auth signatures, when there are any.
    signature_workers: WorkerSignatures | None
    health: HealthProbe

    def with_health(self, servicer: Any) -> list[Any]:
        """The servicer and a ``grpc.health.v1.Health`` for its port (needs no node auth)."""
        return [servicer, self.health.grpc_service([servicer])]


def _scheduler(
    config: Config, state: LinkState, events: RunEvents, appio_address: Address
) -> RunScheduler | None:
    """``--isolation subprocess``: a scheduler launching the executor's program per run."""
    if config.isolation != ISOLATION_SUBPROCESS:
        return None
    app, command = (
        (SIMULATION, config.simulation_command)
        if config.simulation
        else (SERVERAPP, config.serverapp_command)
    )
    return RunScheduler(
        state, events, command, appio_address, replica_id=config.replica_id, app=app
    )


async def _nothing_to_stop(run_id: int) -> None:
    """``--isolation process``: ServerApps are not ours to end."""


def _ignore_claim(run_id: int) -> None:
    """``--isolation process``: no child to bind the run to."""


async def _close_state_last(closing: AsyncExitStack) -> None:
    """The last stage: close the state, not cut short (see ``runtime.shutdown.STATE``)."""
    with stage(STATE), anyio.CancelScope(shield=True):
        await closing.aclose()


async def _purge_expired_messages(state: LinkState) -> None:
    while True:
        await anyio.sleep(PURGE_INTERVAL)
        try:
            removed = await state.purge_expired_messages()
        except StateUnavailableError as exc:
            logger.warning("Cannot purge expired messages now: %s", exc)
            continue
        if removed:
            logger.debug("Purged %d expired message(s)", removed)


def _parse_addresses(config: Config) -> tuple[Address, Address]:
    """The Exec address and the one the per-run processes dial (ServerAppIo or SimulationIo).

    Every address in use is parsed before anything binds (exit code 600 on the first bad one).
    """
    try:
        if not config.simulation:
            config.fleet_listeners()
        if config.metrics_address:
            Address.parse(config.metrics_address)
        appio = (
            config.simulationio_api_address if config.simulation else config.serverappio_api_address
        )
        return Address.parse(config.exec_api_address), Address.parse(appio)
    except AddressError as exc:
        raise SuperLinkExit(ExitCode.COMMON_ADDRESS_INVALID, str(exc)) from exc


def _signature_workers(config: Config, lag: LoopLag) -> WorkerSignatures | None:
    """Worker processes when configured (or CPUs allow) and a Fleet listener signs calls.

    None: node auth checks signatures on the event loop.
    """
    signs = not config.simulation and any(
        listener.api_type == FLEET_GRPC_RERE for listener in config.fleet_listeners()
    )
    workers = default_workers() if config.signature_workers is None else config.signature_workers
    if not signs or workers <= 0:
        return None
    return WorkerSignatures(workers, lag, stop_timeout=WORKERS.bound)


async def _node_authenticator(
    config: Config,
    state: LinkState,
    clock: Callable[[], float],
    signatures: WorkerSignatures | None,
) -> NodeAuthenticator:
    """Load the known keys (replacing the stored list, as the reference does), if any.

    Simulations have no Fleet API, so the reference reads no key list for them; nor do we.
    """
    if config.auth_list_public_keys is None or config.simulation:
        logger.debug("Automatic node authentication enabled")
        return NodeAuthenticator(state, clock=clock, signatures=signatures)
    keys = config.known_public_keys
    await state.replace_known_public_keys(keys)
    logger.info("Node authentication enabled with %d known public keys", len(set(keys)))
    return NodeAuthenticator(state, keys, clock=clock, signatures=signatures)
