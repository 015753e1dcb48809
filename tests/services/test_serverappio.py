"""ServerAppIo API behaviour, through the grpclib servicer over an in-memory channel."""

from __future__ import annotations

import hashlib

import pytest
from grpclib import GRPCError, Status

from superlink_async.state.rules import MESSAGE_UNAVAILABLE, NODE_UNAVAILABLE
from superlink_async.wire import fab_pb2, fleet_pb2, log_pb2, run_pb2, serverappio_pb2
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.message_pb2 import Message
from tests.fabs import make_fab
from tests.services.conftest import Link

pytestmark = pytest.mark.anyio

PULL_INPUTS = serverappio_pb2.PullServerAppInputsRequest()


async def push(link: Link, run_id: int, *messages: Message) -> list[str]:
    response = await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=messages)
    )
    return list(response.message_ids)


async def set_status(link: Link, run_id: int, status: str, sub_status: str = "") -> None:
    await link.serverappio.UpdateRunStatus(
        run_pb2.UpdateRunStatusRequest(
            run_id=run_id, run_status=run_pb2.RunStatus(status=status, sub_status=sub_status)
        )
    )


async def test_pull_inputs_starts_the_oldest_pending_run_once(link: Link) -> None:
    first = await link.start_run()
    second = await link.start_run()
    response = await link.serverappio.PullServerAppInputs(PULL_INPUTS)
    assert response.run.run_id == first
    assert response.run.status.status == "starting"
    assert response.context.run_id == first and response.fab.content == make_fab()
    assert link.claimed_runs == [first]
    again = await link.serverappio.PullServerAppInputs(PULL_INPUTS)
    assert again.run.run_id == second


async def test_pull_inputs_with_nothing_pending_is_empty(link: Link) -> None:
    response = await link.serverappio.PullServerAppInputs(PULL_INPUTS)
    assert not response.HasField("run")


async def test_a_run_whose_fab_vanished_fails_without_blocking_the_next(link: Link) -> None:
    broken = await link.start_run(make_fab(name="broken"))
    healthy = await link.start_run()
    run = await link.state.get_run(broken)
    assert run is not None
    (link.fabs.root / run.fab_hash).unlink()
    response = await link.serverappio.PullServerAppInputs(PULL_INPUTS)
    assert response.run.run_id == healthy
    failed = await link.state.get_run(broken)
    assert failed is not None and failed.status.sub_status == "failed"
    assert "Found no FAB" in failed.status.details


async def test_create_run_checks_the_fab_hash_and_uses_its_metadata(link: Link) -> None:
    content = make_fab(name="other", version="2.0.0")
    with pytest.raises(GRPCError) as error:
        await link.serverappio.CreateRun(
            run_pb2.CreateRunRequest(fab=Fab(hash_str="0" * 64, content=content))
        )
    assert error.value.status is Status.INVALID_ARGUMENT
    good = Fab(hash_str=hashlib.sha256(content).hexdigest(), content=content)
    response = await link.serverappio.CreateRun(run_pb2.CreateRunRequest(fab=good))
    run = await link.state.get_run(response.run_id)
    assert run is not None and (run.fab_id, run.fab_version) == ("tester/other", "2.0.0")
    started = await link.serverappio.PullServerAppInputs(PULL_INPUTS)
    assert started.run.run_id == response.run_id


async def test_get_nodes_lists_online_nodes_of_a_running_run(link: Link) -> None:
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30))
    run_id = await link.running_run()
    response = await link.serverappio.GetNodes(serverappio_pb2.GetNodesRequest(run_id=run_id))
    assert [n.node_id for n in response.nodes] == [node.node.node_id]


async def test_calls_for_unknown_runs_are_not_found(link: Link) -> None:
    for call in (
        link.serverappio.GetNodes(serverappio_pb2.GetNodesRequest(run_id=7)),
        link.serverappio.PushLogs(log_pb2.PushLogsRequest(run_id=7, logs=["x"])),
        link.serverappio.UpdateRunStatus(run_pb2.UpdateRunStatusRequest(run_id=7)),
    ):
        with pytest.raises(GRPCError) as error:
            await call
        assert error.value.status is Status.NOT_FOUND


async def test_a_malformed_batch_stores_nothing(link: Link) -> None:
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30))
    run_id = await link.running_run()
    good = link.instruction(run_id, node.node.node_id)
    bad = link.instruction(run_id, node.node.node_id)
    bad.metadata.message_type = "not a type"
    with pytest.raises(GRPCError) as error:
        await push(link, run_id, good, bad)
    assert error.value.status is Status.INVALID_ARGUMENT
    assert (error.value.message or "").startswith("Malformed PushMessages: ")
    assert await link.state.pull_message_ins(node.node.node_id) == []


async def test_mismatched_run_id_in_a_batch_is_rejected(link: Link) -> None:
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30))
    run_id = await link.running_run()
    message = link.instruction(run_id + 1, node.node.node_id)
    with pytest.raises(GRPCError) as error:
        await push(link, run_id, message)
    assert "mismatched `run_id`" in (error.value.message or "")


async def test_instruction_to_an_unknown_node_gets_an_empty_id(link: Link) -> None:
    run_id = await link.running_run()
    assert await push(link, run_id, link.instruction(run_id, 4242)) == [""]


async def test_replies_are_handed_out_once(link: Link) -> None:
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30))
    run_id = await link.running_run()
    instruction = link.instruction(run_id, node.node.node_id)
    [message_id] = await push(link, run_id, instruction)
    instruction.metadata.message_id = message_id
    await link.fleet.PushMessages(
        fleet_pb2.PushMessagesRequest(messages_list=[link.reply(instruction)])
    )
    request = serverappio_pb2.PullResMessagesRequest(run_id=run_id, message_ids=[message_id])
    first = await link.serverappio.PullMessages(request)
    second = await link.serverappio.PullMessages(request)
    assert not first.messages_list[0].HasField("error")
    assert second.messages_list[0].error.code == MESSAGE_UNAVAILABLE


async def test_an_offline_node_yields_node_unavailable(link: Link) -> None:
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30))
    run_id = await link.running_run()
    [message_id] = await push(link, run_id, link.instruction(run_id, node.node.node_id))
    link.clock.now += 31
    response = await link.serverappio.PullMessages(
        serverappio_pb2.PullResMessagesRequest(run_id=run_id, message_ids=[message_id])
    )
    assert response.messages_list[0].error.code == NODE_UNAVAILABLE


async def test_pull_with_a_malformed_message_id_is_invalid_argument(link: Link) -> None:
    run_id = await link.running_run()
    with pytest.raises(GRPCError) as error:
        await link.serverappio.PullMessages(
            serverappio_pb2.PullResMessagesRequest(run_id=run_id, message_ids=["nope"])
        )
    assert error.value.status is Status.INVALID_ARGUMENT


async def test_invalid_transition_is_answered_ok_and_ignored(link: Link) -> None:
    run_id = await link.start_run()
    await set_status(link, run_id, "running")
    run = await link.state.get_run(run_id)
    assert run is not None and run.status.status == "pending"


async def test_a_finished_run_refuses_status_updates(link: Link) -> None:
    run_id = await link.running_run()
    await set_status(link, run_id, "finished", "completed")
    with pytest.raises(GRPCError) as error:
        await set_status(link, run_id, "running")
    assert error.value.status is Status.PERMISSION_DENIED
    assert error.value.message == "Run is finished."


async def test_outputs_are_kept_for_a_running_run(link: Link) -> None:
    run_id = await link.running_run()
    context = await link.state.get_serverapp_context(run_id)
    assert context is not None
    context.node_config["k"].string = "v"
    await link.serverappio.PushServerAppOutputs(
        serverappio_pb2.PushServerAppOutputsRequest(run_id=run_id, context=context)
    )
    stored = await link.state.get_serverapp_context(run_id)
    assert stored is not None and stored.node_config["k"].string == "v"


async def test_get_run_and_status_and_fab(link: Link) -> None:
    run_id = await link.running_run()
    run = (await link.serverappio.GetRun(run_pb2.GetRunRequest(run_id=run_id))).run
    assert run.status.status == "running" and run.running_at.endswith("+00:00")
    statuses = await link.serverappio.GetRunStatus(
        run_pb2.GetRunStatusRequest(run_ids=[run_id, 12345])
    )
    assert dict(statuses.run_status_dict).keys() == {run_id}
    fab = await link.serverappio.GetFab(fab_pb2.GetFabRequest(hash_str=run.fab_hash))
    assert fab.fab.content == make_fab()
    with pytest.raises(GRPCError) as error:
        await link.serverappio.GetFab(fab_pb2.GetFabRequest(hash_str="../x"))
    assert error.value.status is Status.INVALID_ARGUMENT
