"""examples/embedded.py as a test: an aiohttp host embedding the SuperLink serves a real run,
learns of a crash as SuperLinkExit code 100, and stops cleanly."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import aiohttp
import anyio
import pytest

from examples.embedded import run_host
from superlink_async import Config, ExitCode
from superlink_async.config import ISOLATION_SUBPROCESS, Address
from superlink_async.testing import LocalFederation, free_port, port_is_open
from tests.e2e.harness import COMPLETED, FlowerApp, Timeouts
from tests.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def embedded_config(federation: LocalFederation) -> Config:
    ports = federation.ports
    return Config(
        insecure=True,
        isolation=ISOLATION_SUBPROCESS,
        storage_dir=federation.workdir / "ffs",
        exec_api_address=ports.address(ports.exec),
        serverappio_api_address=ports.address(ports.serverappio),
        fleet_api_address=ports.address(ports.fleet),
    )


async def test_embedded_host_serves_a_run_then_sees_a_crash(
    tmp_path: Path, flower_app: FlowerApp
) -> None:
    federation = LocalFederation(tmp_path, superlink_command=[], num_supernodes=2)
    host = Address("127.0.0.1", free_port())
    stop, crash = anyio.Event(), anyio.Event()
    codes: list[int] = []

    async def host_app() -> None:
        codes.append(await run_host(embedded_config(federation), host, stop, crash.wait))

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(host_app)
            await eventually(lambda: port_is_open(federation.ports.fleet), seconds=20)
            for _ in range(2):
                federation.start_supernode()
            cli = federation.cli(flower_app)
            run_id = await anyio.to_thread.run_sync(cli.run)
            status = await anyio.to_thread.run_sync(
                partial(cli.wait_for_status, run_id, COMPLETED, Timeouts.RUN_COMPLETES)
            )
            assert status == COMPLETED
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{host}/status") as response,
            ):
                page = await response.json()
            assert page["runs"] == {str(run_id): "finished"}
            assert page["beats"] >= 1
            crash.set()
    finally:
        federation.close()
    assert codes == [ExitCode.SUPERLINK_THREAD_CRASH]


async def test_embedded_host_stops_cleanly(tmp_path: Path) -> None:
    federation = LocalFederation(tmp_path, superlink_command=[], num_supernodes=0)
    stop = anyio.Event()
    codes: list[int] = []

    async def host_app() -> None:
        host = Address("127.0.0.1", free_port())
        codes.append(await run_host(embedded_config(federation), host, stop))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(host_app)
            await eventually(lambda: port_is_open(federation.ports.exec), seconds=20)
            stop.set()
    assert codes == [ExitCode.SUCCESS]
    assert not port_is_open(federation.ports.exec)
