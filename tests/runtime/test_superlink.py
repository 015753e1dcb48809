"""The SuperLink object: startup, ordered shutdown, crash reporting, embedding."""

from __future__ import annotations

import os
import socket
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from superlink_async import Config, ExitCode, SuperLink, SuperLinkExit
from superlink_async.config import SIMULATION_EXECUTOR, Address, ConfigError
from superlink_async.testing import descendants
from superlink_async.wire import (
    exec_grpc,
    exec_pb2,
    fleet_grpc,
    fleet_pb2,
    run_pb2,
    simulationio_grpc,
    simulationio_pb2,
)
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.recorddict_pb2 import ConfigRecord, ConfigRecordValue
from tests.fabs import make_fab
from tests.node_keys import NodeKey
from tests.ports import loopback, loopback_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, shutdown_grace=1.0)


def channel_to(address: str) -> closing[Channel]:
    parsed = Address.parse(address)
    return closing(Channel(parsed.host, parsed.port))


async def test_serves_every_api_while_the_block_runs(config: Config) -> None:
    async with SuperLink(config):
        with channel_to(config.exec_api_address) as channel:
            runs = await exec_grpc.ExecStub(channel).ListRuns(exec_pb2.ListRunsRequest())
        assert dict(runs.run_dict) == {}
        assert config.fleet_api_address is not None
        with channel_to(config.fleet_api_address) as channel:
            node = await fleet_grpc.FleetStub(channel).CreateNode(
                fleet_pb2.CreateNodeRequest(ping_interval=30),
                metadata=NodeKey().metadata(time.time()),
            )
        assert node.node.node_id > 1


async def test_signature_workers_serve_signed_calls_and_end_with_the_block(
    config: Config,
) -> None:
    """With ``signature_workers``, workers run beside a SuperLink that serves signed calls.

    (Which checks the workers take is pinned in tests/services/test_signatures.py.) No
    worker outlives the block.
    """
    config = replace(config, signature_workers=1)
    assert config.fleet_api_address is not None
    async with SuperLink(config):
        workers = signature_workers()
        assert len(workers) == 1
        with channel_to(config.fleet_api_address) as channel:
            node = await fleet_grpc.FleetStub(channel).CreateNode(
                fleet_pb2.CreateNodeRequest(ping_interval=30),
                metadata=NodeKey().metadata(time.time()),
            )
        assert node.node.node_id > 1
    assert signature_workers() == []


def signature_workers() -> list[int]:
    """Our processes that run the signature-worker module."""
    return [
        info.pid
        for info in descendants(os.getpid())
        if "superlink_async.runtime.signature_workers" in info.cmdline
    ]


async def test_ports_are_released_after_the_block(config: Config) -> None:
    async with SuperLink(config):
        pass
    exec_address = Address.parse(config.exec_api_address)
    with socket.socket() as sock:
        sock.bind((exec_address.host, exec_address.port))


async def test_a_busy_port_is_a_code_100_crash_naming_the_listener(config: Config) -> None:
    fleet = Address.parse(config.fleet_api_address or "")
    with socket.socket() as blocker:
        blocker.bind((fleet.host, fleet.port))
        blocker.listen()
        with pytest.raises(SuperLinkExit) as exit_info:
            async with SuperLink(config):
                pass
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert "fleet-api" in exit_info.value.message
    assert "An important background thread has crashed." in str(exit_info.value)


async def test_a_crashing_task_cancels_the_host_and_raises_code_100(config: Config) -> None:
    with pytest.raises(SuperLinkExit) as exit_info:
        async with SuperLink(config) as link:
            link.start_soon("injected", _fail)
            await anyio.sleep(5)
            pytest.fail("the host block was not cancelled")
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert "Task 'injected' crashed: RuntimeError: injected fault" in exit_info.value.message


async def _fail() -> None:
    raise RuntimeError("injected fault")


async def test_a_host_task_that_returns_is_a_code_100_crash_naming_it(config: Config) -> None:
    """Supervised tasks run until stopped; one that ends by itself is noticed, not lost."""
    with pytest.raises(SuperLinkExit) as exit_info:
        async with SuperLink(config) as link:
            link.start_soon("one-shot", anyio.sleep, 0)
            await anyio.sleep(5)
            pytest.fail("the host block was not cancelled")
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert "Task 'one-shot' crashed: TaskReturnedError" in exit_info.value.message


async def test_an_unparsable_address_is_code_600_before_anything_binds(config: Config) -> None:
    bad = replace(config, fleet_api_address="no-port-here")
    with pytest.raises(SuperLinkExit) as exit_info:
        async with SuperLink(bad):
            pass
    assert exit_info.value.code is ExitCode.COMMON_ADDRESS_INVALID
    assert "Address (no-port-here) cannot be parsed." in str(exit_info.value)
    exec_address = Address.parse(config.exec_api_address)
    with socket.socket() as sock:
        sock.bind((exec_address.host, exec_address.port))


async def test_a_key_list_admits_listed_nodes_only(config: Config, tmp_path: Path) -> None:
    listed, stranger = NodeKey(), NodeKey()
    keys = tmp_path / "keys.csv"
    keys.write_text(listed.ssh() + "\n")
    async with SuperLink(replace(config, auth_list_public_keys=keys)) as link:
        assert await link.state.get_known_public_keys() == {listed.pem}
        with channel_to(config.fleet_api_address or "") as channel:
            stub = fleet_grpc.FleetStub(channel)
            request = fleet_pb2.CreateNodeRequest(ping_interval=30)
            node = await stub.CreateNode(request, metadata=listed.metadata(time.time()))
            with pytest.raises(GRPCError) as error:
                await stub.CreateNode(request, metadata=stranger.metadata(time.time()))
    assert node.node.node_id > 1
    assert (error.value.status, error.value.message) == (
        Status.UNAUTHENTICATED,
        "Public key not recognized",
    )


async def test_a_key_list_with_an_unsigned_fleet_transport_is_refused_before_binding(
    config: Config, tmp_path: Path
) -> None:
    """Embedding gets the CLI's refusal too: GrpcAdapter SuperNodes cannot sign their calls."""
    keys = tmp_path / "keys.csv"
    keys.write_text(NodeKey().ssh() + "\n")
    adapter = replace(config, fleet_api_type="grpc-adapter", auth_list_public_keys=keys)
    with pytest.raises(ConfigError, match="cannot be used with --fleet-api-type grpc-adapter"):
        async with SuperLink(adapter):
            pass
    exec_address = Address.parse(config.exec_api_address)
    with socket.socket() as sock:
        sock.bind((exec_address.host, exec_address.port))


async def test_calls_during_drain_are_unavailable(config: Config) -> None:
    link = SuperLink(config)
    await link.__aenter__()
    try:
        await link._gate.drain(0)
        with channel_to(config.exec_api_address) as channel, pytest.raises(GRPCError) as error:
            await exec_grpc.ExecStub(channel).ListRuns(exec_pb2.ListRunsRequest())
        assert error.value.status is Status.UNAVAILABLE
    finally:
        await link.__aexit__(None, None, None)


async def test_a_rest_listener_that_cannot_bind_is_a_code_100_crash(config: Config) -> None:
    """The REST Fleet API is supervised like the others (the reference's thread was not)."""
    rest = Address.parse(loopback())
    rest_config = replace(config, fleet_api_type="rest", fleet_api_address=str(rest))
    with socket.socket() as blocker:
        blocker.bind((rest.host, rest.port))
        blocker.listen()
        with pytest.raises(SuperLinkExit) as exit_info:
            async with SuperLink(rest_config):
                pass
    assert exit_info.value.code is ExitCode.SUPERLINK_THREAD_CRASH
    assert "Task 'fleet-rest-api' crashed: OSError" in exit_info.value.message


async def test_a_stalled_client_does_not_hold_up_others(config: Config) -> None:
    """A connection that sends half a request and stalls leaves every other caller served."""
    async with SuperLink(config):
        fleet = Address.parse(config.fleet_api_address or "")
        stalled = await anyio.connect_tcp(fleet.host, fleet.port)
        async with stalled:
            await stalled.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00")
            with anyio.fail_after(5), channel_to(str(fleet)) as channel:
                node = await fleet_grpc.FleetStub(channel).CreateNode(
                    fleet_pb2.CreateNodeRequest(ping_interval=30),
                    metadata=NodeKey().metadata(time.time()),
                )
            assert node.node.node_id > 1


async def test_an_executor_we_do_not_serve_is_refused_before_anything_binds(
    config: Config,
) -> None:
    """Embedding gets the CLI's check: any other executor is a ConfigError, nothing listens."""
    config = replace(config, executor="my_project.executor:executor")
    with pytest.raises(ConfigError, match="cannot be used"):
        async with SuperLink(config):
            pass
    assert not is_listening(config.exec_api_address)


def is_listening(address: str) -> bool:
    parsed = Address.parse(address)
    with socket.socket() as probe:
        return probe.connect_ex((parsed.host, parsed.port)) == 0


async def test_the_simulation_executor_serves_exec_and_simulationio_only(
    config: Config, tmp_path: Path
) -> None:
    """Exec and SimulationIo (with health) listen; Fleet and ServerAppIo do not. With a
    database, a simulation run and its federation options survive a restart, and the run that
    was running is finished as failed, as deployment runs are."""
    config = replace(
        config,
        executor=SIMULATION_EXECUTOR,
        simulationio_api_address=loopback(),
        database=str(tmp_path / "state.db"),
    )
    options = ConfigRecord(data={"num-supernodes": ConfigRecordValue(sint64=10)})
    async with SuperLink(config):
        assert config.fleet_api_address is not None
        assert not is_listening(config.fleet_api_address)
        assert not is_listening(config.serverappio_api_address)
        with channel_to(config.exec_api_address) as channel:
            started = await exec_grpc.ExecStub(channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=make_fab()), federation_options=options)
            )
        with channel_to(config.simulationio_api_address) as channel:
            simulationio = simulationio_grpc.SimulationIoStub(channel)
            inputs = await simulationio.PullSimulationInputs(
                simulationio_pb2.PullSimulationInputsRequest()
            )
            assert inputs.run.run_id == started.run_id
            await simulationio.UpdateRunStatus(
                run_pb2.UpdateRunStatusRequest(
                    run_id=started.run_id, run_status=run_pb2.RunStatus(status="running")
                )
            )
            health = await HealthStub(channel).Check(HealthCheckRequest())
            assert health.status == HealthCheckResponse.SERVING
    async with SuperLink(config) as restarted:
        run = await restarted.state.get_run(started.run_id)
        assert run is not None
        assert (run.status.status, run.status.sub_status) == ("finished", "failed")
        assert run.federation_options == options
