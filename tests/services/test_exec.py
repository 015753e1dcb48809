"""Exec API behaviour, through the grpclib servicer over an in-memory channel."""

from __future__ import annotations

import anyio
import pytest
from grpclib import GRPCError, Status

from superlink_async.wire import exec_pb2, log_pb2, run_pb2
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.recorddict_pb2 import ConfigRecord, ConfigRecordValue
from tests.fabs import make_fab
from tests.services.conftest import Link

pytestmark = pytest.mark.anyio


async def test_start_run_creates_a_pending_run_with_its_options(link: Link) -> None:
    options = ConfigRecord()
    options.data["num-supernodes"].CopyFrom(ConfigRecordValue(sint64=2))
    request = exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
    request.federation_options.CopyFrom(options)
    request.override_config["num-server-rounds"].sint64 = 1
    response = await link.exec.StartRun(request)
    run = await link.state.get_run(response.run_id)
    assert run is not None and run.status.status == "pending"
    assert run.override_config == {"num-server-rounds": 1}
    assert await link.state.get_federation_options(response.run_id) == options


async def test_start_run_with_a_broken_fab_answers_without_run_id(link: Link) -> None:
    response = await link.exec.StartRun(exec_pb2.StartRunRequest(fab=Fab(content=b"not a zip")))
    assert not response.HasField("run_id")
    assert await link.state.get_runs() == []


async def test_list_runs_gives_all_or_one_and_the_time(link: Link) -> None:
    first = await link.start_run()
    second = await link.start_run()
    everything = await link.exec.ListRuns(exec_pb2.ListRunsRequest())
    assert set(everything.run_dict) == {first, second}
    assert everything.now.endswith("+00:00")
    one = await link.exec.ListRuns(exec_pb2.ListRunsRequest(run_id=second))
    assert set(one.run_dict) == {second}
    none = await link.exec.ListRuns(exec_pb2.ListRunsRequest(run_id=99))
    assert dict(none.run_dict) == {}


async def test_stop_run_finishes_it_drops_its_messages_and_ends_its_serverapp(link: Link) -> None:
    run_id = await link.running_run()
    node_id = await link.state.create_node(30)
    await link.state.store_message_ins(link.instruction(run_id, node_id))
    response = await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=run_id))
    assert response.success
    run = await link.state.get_run(run_id)
    assert run is not None and (run.status.status, run.status.sub_status) == ("finished", "stopped")
    assert await link.state.pull_message_ins(node_id) == []
    assert link.stopped_runs == [run_id]


async def test_stop_run_of_unknown_or_finished_runs_fails_clearly(link: Link) -> None:
    with pytest.raises(GRPCError) as unknown:
        await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=5))
    assert (unknown.value.status, unknown.value.message) == (Status.NOT_FOUND, "Run ID 5 not found")
    run_id = await link.start_run()
    await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=run_id))
    with pytest.raises(GRPCError) as finished:
        await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=run_id))
    assert finished.value.status is Status.FAILED_PRECONDITION
    assert finished.value.message == f"Run ID {run_id} is already finished"


async def test_stream_logs_of_an_unknown_run_is_not_found(link: Link) -> None:
    with pytest.raises(GRPCError) as error:
        async with link.exec.StreamLogs.open() as stream:
            await stream.send_message(exec_pb2.StreamLogsRequest(run_id=3), end=True)
            await stream.recv_message()
    assert (error.value.status, error.value.message) == (Status.NOT_FOUND, "Run ID not found")


async def test_stream_logs_delivers_the_last_lines_before_ending(link: Link) -> None:
    """Logs pushed right before the final status are streamed (the reference could drop them)."""
    run_id = await link.running_run()
    await link.serverappio.PushLogs(log_pb2.PushLogsRequest(run_id=run_id, logs=["first\n"]))
    received: list[str] = []

    async def finish_run() -> None:
        link.clock.now += 1
        await link.serverappio.PushLogs(log_pb2.PushLogsRequest(run_id=run_id, logs=["last\n"]))
        await link.serverappio.UpdateRunStatus(
            run_pb2.UpdateRunStatusRequest(
                run_id=run_id,
                run_status=run_pb2.RunStatus(status="finished", sub_status="completed"),
            )
        )

    with anyio.fail_after(5):
        async with link.exec.StreamLogs.open() as stream:
            await stream.send_message(exec_pb2.StreamLogsRequest(run_id=run_id), end=True)
            received.append((await stream.recv_message()).log_output)  # type: ignore[union-attr]
            await finish_run()
            async for response in stream:
                received.append(response.log_output)
    assert "".join(received) == "first\nlast\n"


async def test_login_calls_are_unimplemented(link: Link) -> None:
    for call in (
        link.exec.GetLoginDetails(exec_pb2.GetLoginDetailsRequest()),
        link.exec.GetAuthTokens(exec_pb2.GetAuthTokensRequest()),
    ):
        with pytest.raises(GRPCError) as error:
            await call
        assert error.value.status is Status.UNIMPLEMENTED
        assert error.value.message == "ExecServicer initialized without user authentication"
