"""Fleet API behaviour, through the grpclib servicer over an in-memory channel."""

from __future__ import annotations

import pytest
from grpclib import GRPCError, Status

from superlink_async.wire import exec_pb2, fab_pb2, fleet_pb2, run_pb2, serverappio_pb2
from superlink_async.wire.message_pb2 import Message
from superlink_async.wire.node_pb2 import Node
from tests.services.conftest import Link

pytestmark = pytest.mark.anyio


async def create_node(link: Link) -> int:
    response = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0))
    return response.node.node_id


async def send_instruction(link: Link, run_id: int, node_id: int) -> Message:
    instruction = link.instruction(run_id, node_id)
    response = await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[instruction])
    )
    instruction.metadata.message_id = response.message_ids[0]
    return instruction


async def test_create_node_returns_a_fresh_online_node(link: Link) -> None:
    node_id = await create_node(link)
    assert node_id not in (0, 1)
    assert await link.state.get_online_nodes() == [node_id]


async def test_delete_node_forgets_it_and_unset_id_is_a_no_op(link: Link) -> None:
    node_id = await create_node(link)
    await link.fleet.DeleteNode(fleet_pb2.DeleteNodeRequest(node=Node(node_id=0)))
    assert await link.state.node_exists(node_id)
    await link.fleet.DeleteNode(fleet_pb2.DeleteNodeRequest(node=Node(node_id=node_id)))
    assert not await link.state.node_exists(node_id)


async def test_delete_unknown_node_is_not_found(link: Link) -> None:
    with pytest.raises(GRPCError) as error:
        await link.fleet.DeleteNode(fleet_pb2.DeleteNodeRequest(node=Node(node_id=1234)))
    assert error.value.status is Status.NOT_FOUND
    assert error.value.message == "Node 1234 not found"


async def test_ping_succeeds_only_for_known_nodes(link: Link) -> None:
    node_id = await create_node(link)
    known = await link.fleet.Ping(
        fleet_pb2.PingRequest(node=Node(node_id=node_id), ping_interval=30)
    )
    unknown = await link.fleet.Ping(fleet_pb2.PingRequest(node=Node(node_id=99), ping_interval=30))
    assert known.success and not unknown.success


async def test_pull_hands_out_one_instruction_at_a_time(link: Link) -> None:
    node_id = await create_node(link)
    run_id = await link.running_run()
    first = await send_instruction(link, run_id, node_id)
    second = await send_instruction(link, run_id, node_id)
    request = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
    pulled = [(await link.fleet.PullMessages(request)).messages_list for _ in range(3)]
    assert [m.metadata.message_id for batch in pulled for m in batch] == [
        first.metadata.message_id,
        second.metadata.message_id,
    ]
    assert [len(batch) for batch in pulled] == [1, 1, 0]


async def test_push_stores_a_reply_the_serverapp_then_receives(link: Link) -> None:
    node_id = await create_node(link)
    run_id = await link.running_run()
    instruction = await send_instruction(link, run_id, node_id)
    response = await link.fleet.PushMessages(
        fleet_pb2.PushMessagesRequest(
            node=Node(node_id=node_id), messages_list=[link.reply(instruction)]
        )
    )
    assert response.reconnect.reconnect == 5
    assert list(response.results.values()) == [0]
    pulled = await link.serverappio.PullMessages(
        serverappio_pb2.PullResMessagesRequest(
            run_id=run_id, message_ids=[instruction.metadata.message_id]
        )
    )
    assert [m.metadata.message_id for m in pulled.messages_list] == list(response.results)


async def test_push_for_a_run_that_is_not_running_is_permission_denied(link: Link) -> None:
    node_id = await create_node(link)
    run_id = await link.running_run()
    instruction = await send_instruction(link, run_id, node_id)
    await link.exec.StopRun(exec_pb2.StopRunRequest(run_id=run_id))
    with pytest.raises(GRPCError) as error:
        await link.fleet.PushMessages(
            fleet_pb2.PushMessagesRequest(messages_list=[link.reply(instruction)])
        )
    assert error.value.status is Status.PERMISSION_DENIED
    assert error.value.message == "Run is finished. Stopped by user."


async def test_push_of_a_malformed_reply_is_answered_ok_and_not_stored(link: Link) -> None:
    node_id = await create_node(link)
    run_id = await link.running_run()
    instruction = await send_instruction(link, run_id, node_id)
    reply = link.reply(instruction)
    reply.metadata.ttl = 0
    response = await link.fleet.PushMessages(fleet_pb2.PushMessagesRequest(messages_list=[reply]))
    assert dict(response.results) == {}
    assert await link.state.take_replies(run_id, [instruction.metadata.message_id]) == []


async def test_push_of_nothing_is_invalid_argument(link: Link) -> None:
    with pytest.raises(GRPCError) as error:
        await link.fleet.PushMessages(fleet_pb2.PushMessagesRequest())
    assert error.value.status is Status.INVALID_ARGUMENT


async def test_get_run_gives_identity_only_for_a_running_run(link: Link) -> None:
    run_id = await link.running_run()
    response = await link.fleet.GetRun(run_pb2.GetRunRequest(run_id=run_id))
    assert response.run.run_id == run_id
    assert response.run.fab_id == "tester/demo"
    assert response.run.fab_version == "1.0.0"
    assert not response.run.pending_at and not response.run.HasField("status")


async def test_get_run_of_an_unknown_run_is_empty(link: Link) -> None:
    response = await link.fleet.GetRun(run_pb2.GetRunRequest(run_id=42))
    assert not response.HasField("run")


async def test_get_run_of_a_pending_run_is_permission_denied(link: Link) -> None:
    run_id = await link.start_run()
    with pytest.raises(GRPCError) as error:
        await link.fleet.GetRun(run_pb2.GetRunRequest(run_id=run_id))
    assert error.value.status is Status.PERMISSION_DENIED
    assert error.value.message == "Run is pending."


async def test_get_fab_serves_only_the_runs_own_fab(link: Link) -> None:
    run_id = await link.running_run()
    run = await link.state.get_run(run_id)
    assert run is not None
    response = await link.fleet.GetFab(fab_pb2.GetFabRequest(run_id=run_id, hash_str=run.fab_hash))
    assert response.fab.hash_str == run.fab_hash and response.fab.content
    for bad_hash in ("../../etc/passwd", "0" * 64):
        with pytest.raises(GRPCError) as error:
            await link.fleet.GetFab(fab_pb2.GetFabRequest(run_id=run_id, hash_str=bad_hash))
        assert error.value.status is Status.NOT_FOUND
