"""SimulationIo API behaviour, and Exec in simulation mode, over an in-memory grpclib channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpclib import GRPCError, Status
from grpclib._typing import IServable
from grpclib.testing import ChannelFor

from superlink_async.services.exec import ExecService
from superlink_async.services.runs import RunEvents
from superlink_async.services.simulationio import SimulationIoService
from superlink_async.state import LinkState, open_state
from superlink_async.state.fab_store import DirectoryFabStore
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.servicers import ExecServicer, SimulationIoServicer
from superlink_async.wire import (
    exec_grpc,
    exec_pb2,
    log_pb2,
    run_pb2,
    simulationio_grpc,
    simulationio_pb2,
)
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.message_pb2 import Context
from superlink_async.wire.recorddict_pb2 import ConfigRecord, ConfigRecordValue
from superlink_async.wire.transport_pb2 import Scalar
from tests.fabs import make_fab
from tests.services.conftest import REPLICA

pytestmark = pytest.mark.anyio

PULL_INPUTS = simulationio_pb2.PullSimulationInputsRequest()
TEN_SUPERNODES = ConfigRecord(data={"num-supernodes": ConfigRecordValue(sint64=10)})


@dataclass
class SimulationLink:
    """Exec (simulation executor) and SimulationIo stubs over one state."""

    exec: exec_grpc.ExecStub
    simulationio: simulationio_grpc.SimulationIoStub
    state: LinkState
    fabs: DirectoryFabStore
    claimed_runs: list[int] = field(default_factory=list)

    async def start_run(
        self, options: ConfigRecord = TEN_SUPERNODES, fab: bytes | None = None
    ) -> exec_pb2.StartRunResponse:
        """``flwr run`` of a federation with ``options``."""
        content = make_fab() if fab is None else fab
        return await self.exec.StartRun(
            exec_pb2.StartRunRequest(fab=Fab(content=content), federation_options=options)
        )

    async def pending_run(self, fab: bytes | None = None) -> int:
        response = await self.start_run(fab=fab)
        assert response.HasField("run_id")
        return response.run_id

    async def set_status(self, run_id: int, status: str, sub_status: str = "") -> None:
        await self.simulationio.UpdateRunStatus(
            run_pb2.UpdateRunStatusRequest(
                run_id=run_id, run_status=run_pb2.RunStatus(status=status, sub_status=sub_status)
            )
        )

    async def running_run(self) -> int:
        """A run that flwr-simulation has claimed and set running."""
        run_id = await self.pending_run()
        await self.simulationio.PullSimulationInputs(PULL_INPUTS)
        await self.set_status(run_id, "running")
        return run_id


@pytest.fixture
async def link(database: str, tmp_path: Path) -> AsyncIterator[SimulationLink]:
    async with open_state(database) as state:
        fabs = DirectoryFabStore(tmp_path / "ffs")
        events = RunEvents()
        gate = CallGate()
        claimed: list[int] = []
        servicers: list[IServable] = [
            ExecServicer(ExecService(state, fabs, events, simulation=True), gate),
            SimulationIoServicer(
                SimulationIoService(
                    state, fabs, events, replica_id=REPLICA, on_claim=claimed.append
                ),
                gate,
            ),
        ]
        async with ChannelFor(servicers) as channel:
            yield SimulationLink(
                exec=exec_grpc.ExecStub(channel),
                simulationio=simulationio_grpc.SimulationIoStub(channel),
                state=state,
                fabs=fabs,
                claimed_runs=claimed,
            )


async def assert_refused(call: Awaitable[object], status: Status, message: str) -> None:
    with pytest.raises(GRPCError) as error:
        await call
    assert error.value.status is status
    assert error.value.message == message


async def test_start_run_without_num_supernodes_creates_no_run(
    link: SimulationLink, caplog: pytest.LogCaptureFixture
) -> None:
    """The simulation executor answers an empty StartRunResponse (the CLI's failed start) and
    logs the reference's reason; runs stored before are untouched."""
    kept = await link.pending_run()
    response = await link.start_run(ConfigRecord())
    assert not response.HasField("run_id")
    assert "Could not start run: Federation options doesn't contain key `num-supernodes`." in (
        caplog.text
    )
    assert "Executor failed to start run" in caplog.text
    assert [run.run_id for run in await link.state.get_runs()] == [kept]


async def test_federation_options_are_stored_with_the_run(link: SimulationLink) -> None:
    """GetFederationOptions returns what `flwr run` sent, whatever the run's status."""
    run_id = await link.pending_run()
    response = await link.simulationio.GetFederationOptions(
        run_pb2.GetFederationOptionsRequest(run_id=run_id)
    )
    assert response.federation_options == TEN_SUPERNODES


async def test_pull_inputs_claims_the_oldest_pending_run_with_context_and_fab(
    link: SimulationLink,
) -> None:
    """Like PullServerAppInputs: the run starts, the empty context and the FAB come along, the
    scheduler learns which run was taken; then the next one; then an empty response."""
    first = await link.pending_run()
    second = await link.pending_run()
    response = await link.simulationio.PullSimulationInputs(PULL_INPUTS)
    assert response.run.run_id == first
    assert response.run.status.status == "starting"
    assert response.context == Context(run_id=first, node_id=0)
    assert response.fab.content == make_fab()
    assert (await link.simulationio.PullSimulationInputs(PULL_INPUTS)).run.run_id == second
    assert not (await link.simulationio.PullSimulationInputs(PULL_INPUTS)).HasField("run")
    assert link.claimed_runs == [first, second]


async def test_a_run_whose_fab_vanished_fails_without_blocking_the_next(
    link: SimulationLink,
) -> None:
    broken = await link.pending_run(make_fab(name="broken"))
    healthy = await link.pending_run()
    run = await link.state.get_run(broken)
    assert run is not None
    (link.fabs.root / run.fab_hash).unlink()
    assert (await link.simulationio.PullSimulationInputs(PULL_INPUTS)).run.run_id == healthy
    failed = await link.state.get_run(broken)
    assert failed is not None and failed.status.sub_status == "failed"
    assert "Found no FAB" in failed.status.details


async def test_a_simulation_runs_to_completion_with_its_logs_and_outputs(
    link: SimulationLink,
) -> None:
    """Running → logs pushed → outputs kept → finished:completed, as flwr-simulation drives it."""
    run_id = await link.running_run()
    await link.simulationio.PushLogs(log_pb2.PushLogsRequest(run_id=run_id, logs=["a\n", "b\n"]))
    context = Context(run_id=run_id, node_id=0, run_config={"rounds": Scalar(sint64=1)})
    await link.simulationio.PushSimulationOutputs(
        simulationio_pb2.PushSimulationOutputsRequest(run_id=run_id, context=context)
    )
    await link.set_status(run_id, "finished", "completed")
    statuses = await link.simulationio.GetRunStatus(run_pb2.GetRunStatusRequest(run_ids=[run_id]))
    assert statuses.run_status_dict[run_id].sub_status == "completed"
    assert await link.state.get_serverapp_context(run_id) == context
    text, _ = await link.state.get_serverapp_log(run_id, 0.0)
    assert text == "a\nb\n"


async def test_calls_for_an_unknown_run_are_refused(link: SimulationLink) -> None:
    """Federation options: the reference's FAILED_PRECONDITION; the rest NOT_FOUND, as on
    ServerAppIo (the reference leaked UNKNOWN)."""
    await assert_refused(
        link.simulationio.GetFederationOptions(run_pb2.GetFederationOptionsRequest(run_id=7)),
        Status.FAILED_PRECONDITION,
        "Expected federation options to be set, but none available.",
    )
    for call in (
        link.simulationio.PushLogs(log_pb2.PushLogsRequest(run_id=7, logs=["x"])),
        link.simulationio.UpdateRunStatus(run_pb2.UpdateRunStatusRequest(run_id=7)),
        link.simulationio.PushSimulationOutputs(
            simulationio_pb2.PushSimulationOutputsRequest(run_id=7, context=Context(run_id=7))
        ),
    ):
        await assert_refused(call, Status.NOT_FOUND, "Run 7 not found")


async def test_outputs_of_a_run_not_running_are_refused_and_nothing_is_lost(
    link: SimulationLink,
) -> None:
    """PushSimulationOutputs needs a running run (PERMISSION_DENIED with the reference's text);
    the stored context stays as it was."""
    run_id = await link.pending_run()
    await link.simulationio.PullSimulationInputs(PULL_INPUTS)
    outputs = simulationio_pb2.PushSimulationOutputsRequest(
        run_id=run_id, context=Context(run_id=run_id, node_id=5)
    )
    await assert_refused(
        link.simulationio.PushSimulationOutputs(outputs),
        Status.PERMISSION_DENIED,
        "Run is starting.",
    )
    assert await link.state.get_serverapp_context(run_id) == Context(run_id=run_id, node_id=0)


async def test_a_stopped_run_refuses_status_updates(link: SimulationLink) -> None:
    """After `flwr stop`, flwr-simulation's final status update is refused as by the reference."""
    run_id = await link.running_run()
    await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=run_id))
    await assert_refused(
        link.set_status(run_id, "finished", "completed"),
        Status.PERMISSION_DENIED,
        "Run is finished. Stopped by user.",
    )
    statuses = await link.state.get_run_statuses([run_id])
    assert statuses[run_id].sub_status == "stopped"
