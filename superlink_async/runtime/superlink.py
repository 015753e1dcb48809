"""The SuperLink: owns config, state, FAB storage, listeners and scheduler.

Use it inside another asyncio application::

    async with SuperLink(config) as link:
        ...  # the server runs while this block runs

Leaving the block shuts down in order: refuse new calls and drain those in flight
(bounded by ``config.shutdown_grace``), end ServerApp children, close the listeners, then
close the state. If a component crashes, the block is cancelled and ``SuperLinkExit``
with code 100 (naming the task and the cause) is raised from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio

from superlink_async.config import (
    FLEET_GRPC_RERE,
    ISOLATION_SUBPROCESS,
    Address,
    AddressError,
    Config,
)
from superlink_async.exit_codes import ExitCode, SuperLinkExit
from superlink_async.logs import logger
from superlink_async.runtime.scheduler import ServerAppScheduler
from superlink_async.runtime.supervisor import Supervisor, TaskFunction
from superlink_async.services.exec import ExecService
from superlink_async.services.fleet import FleetService
from superlink_async.services.runs import RunEvents
from superlink_async.services.serverappio import ServerAppIoService
from superlink_async.state.base import LinkState
from superlink_async.state.factory import open_state
from superlink_async.storage import FabStore
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.server import serve_grpc
from superlink_async.transports.grpc.servicers import (
    ExecServicer,
    FleetServicer,
    ServerAppIoServicer,
)

#: How often expired messages are swept from the state (the reference never does).
PURGE_INTERVAL = 60.0

#: What a run still starting or running at startup is finished with.
INTERRUPTED_RUN_DETAILS = "The SuperLink restarted while this run was in progress"


class SuperLink:
    """One SuperLink in this event loop; see the module docstring."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._stack = AsyncExitStack()
        self._gate = CallGate()
        self._supervisor: Supervisor | None = None
        self._state: LinkState | None = None

    @property
    def state(self) -> LinkState:
        """The live state store (for embedding applications and tests)."""
        if self._state is None:
            raise RuntimeError("SuperLink is not running")
        return self._state

    def start_soon(self, name: str, function: TaskFunction, *args: Any) -> None:
        """Run a host task under the same supervision as the server's own components.

        If it raises, the whole SuperLink stops and exits with code 100 naming ``name``.
        """
        if self._supervisor is None:
            raise RuntimeError("SuperLink is not running")
        self._supervisor.start_soon(name, function, *args)

    async def __aenter__(self) -> SuperLink:
        addresses = _parse_addresses(self.config)
        _reject_unsupported(self.config)
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
            if not self._gate.draining:
                drained = await self._gate.drain(self.config.shutdown_grace)
                if not drained:
                    logger.warning(
                        "%d call(s) still in flight after %.1fs; closing anyway",
                        self._gate.in_flight,
                        self.config.shutdown_grace,
                    )
        if self._supervisor is not None:
            self._supervisor.cancel()
        return await self._stack.__aexit__(exc_type, exc, traceback)

    async def _start(
        self, exec_address: Address, serverappio_address: Address, fleet_address: Address
    ) -> None:
        config = self.config
        state = await self._stack.enter_async_context(open_state(config.database, self._clock))
        self._state = state
        if interrupted := await state.fail_interrupted_runs(INTERRUPTED_RUN_DETAILS):
            logger.warning("Marked interrupted run(s) as failed: %s", interrupted)
        fabs = FabStore(config.storage_dir)
        events = RunEvents()
        scheduler = (
            ServerAppScheduler(state, events, config.serverapp_command, serverappio_address)
            if config.isolation == ISOLATION_SUBPROCESS
            else None
        )
        exec_service = ExecService(
            state,
            fabs,
            events,
            on_stop=scheduler.stop_run if scheduler else _nothing_to_stop,
            clock=self._clock,
        )
        serverappio_service = ServerAppIoService(
            state,
            fabs,
            events,
            on_claim=scheduler.run_claimed if scheduler else _ignore_claim,
            clock=self._clock,
        )
        fleet_service = FleetService(state, fabs, clock=self._clock)

        supervisor = await self._stack.enter_async_context(Supervisor())
        self._supervisor = supervisor
        gate = self._gate
        await supervisor.start(
            "exec-api",
            serve_grpc,
            [ExecServicer(exec_service, gate)],
            exec_address,
            "Flower Deployment Engine: Starting Exec API",
        )
        await supervisor.start(
            "serverappio-api",
            serve_grpc,
            [ServerAppIoServicer(serverappio_service, gate)],
            serverappio_address,
            "Flower ECE: Starting ServerAppIo API (gRPC-rere)",
        )
        await supervisor.start(
            "fleet-api",
            serve_grpc,
            [FleetServicer(fleet_service, gate)],
            fleet_address,
            "Flower ECE: Starting Fleet API (gRPC-rere)",
        )
        if scheduler is not None:
            await supervisor.start("scheduler", scheduler.run)
        supervisor.start_soon("message-purger", _purge_expired_messages, state)


async def _nothing_to_stop(run_id: int) -> None:
    """``--isolation process``: ServerApps are not ours to end."""


def _ignore_claim(run_id: int) -> None:
    """``--isolation process``: no child to bind the run to."""


async def _purge_expired_messages(state: LinkState) -> None:
    while True:
        await anyio.sleep(PURGE_INTERVAL)
        if removed := await state.purge_expired_messages():
            logger.debug("Purged %d expired message(s)", removed)


def _parse_addresses(config: Config) -> tuple[Address, Address, Address]:
    """Every address, parsed before anything binds (exit code 600 on the first bad one)."""
    try:
        return (
            Address.parse(config.exec_api_address),
            Address.parse(config.serverappio_api_address),
            Address.parse(config.fleet_address),
        )
    except AddressError as exc:
        raise SuperLinkExit(ExitCode.COMMON_ADDRESS_INVALID, str(exc)) from exc


def _reject_unsupported(config: Config) -> None:
    """Options this version does not serve yet fail loudly instead of being ignored."""
    problems = []
    if not config.insecure:
        problems.append("TLS (run with --insecure)")
    if config.fleet_api_type != FLEET_GRPC_RERE:
        problems.append(f"--fleet-api-type {config.fleet_api_type}")
    if config.auth_list_public_keys is not None:
        problems.append("node authentication (--auth-list-public-keys)")
    if problems:
        raise ValueError("Not supported yet by superlink-async: " + ", ".join(problems))
