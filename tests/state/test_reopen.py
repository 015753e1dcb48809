"""Behaviour of the durable backends (a SQLite file, PostgreSQL): what a reopen keeps."""

from __future__ import annotations

import pytest

from superlink_async.state import rules
from superlink_async.state.base import (
    FINISHED,
    PENDING,
    STARTING,
    STOPPED,
    RunStatus,
    UserConfig,
)
from superlink_async.testing.clock import FakeClock
from superlink_async.wire.message_pb2 import Context
from superlink_async.wire.recorddict_pb2 import ConfigRecord, ConfigRecordValue
from superlink_async.wire.transport_pb2 import Scalar
from tests.state.conftest import Reopen
from tests.state.test_linkstate import REPLICA
from tests.state.test_sqlite import instruction, reply

pytestmark = pytest.mark.anyio


async def test_reopened_database_keeps_runs_nodes_keys_messages_contexts_and_logs(
    reopen: Reopen, clock: FakeClock
) -> None:
    """Everything the reference kept across a restart is still there after close + open."""
    override: UserConfig = {"bytes": b"\x00\xff", "flag": True, "one": 1, "half": 0.5, "text": "t"}
    options = ConfigRecord()
    options.data["num-server-rounds"].CopyFrom(ConfigRecordValue(sint64=3))
    context = Context(run_id=0, node_id=0)
    context.run_config["lr"].CopyFrom(Scalar(double=0.1))

    async with reopen() as state:
        node_id, _ = await state.create_keyed_node(30.0, b"node-key")
        await state.replace_known_public_keys([b"known-1", b"known-2"])
        run_id = await state.create_run("flwr/app", "1.0.0", "abc123", override, options)
        stopped_id = await state.create_run("flwr/app", "1.0.0", "abc123", {}, ConfigRecord())
        assert await state.update_run_status(stopped_id, RunStatus(FINISHED, STOPPED))
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        assert claimed.run_id == run_id
        context.run_id = run_id
        await state.set_serverapp_context(run_id, context)
        await state.add_serverapp_log(run_id, "first ")
        await state.add_serverapp_log(run_id, "second")  # same timestamp: both kept
        waiting = instruction(run_id, node_id, clock)
        waiting.metadata.message_id = await state.store_message_ins(waiting)
        answered = instruction(run_id, node_id, clock, group="answered")
        answered.metadata.message_id = await state.store_message_ins(answered)
        runs_before = await state.get_runs()

    async with reopen() as state:
        assert await state.get_runs() == runs_before
        run = await state.get_run(run_id)
        assert run is not None
        assert run.override_config == override
        assert {key: type(value) for key, value in run.override_config.items()} == {
            key: type(value) for key, value in override.items()
        }
        assert run.fab_hash == "abc123"
        assert await state.get_federation_options(run_id) == options
        assert await state.get_serverapp_context(run_id) == context
        assert await state.get_serverapp_log(run_id, 0.0) == ("first second", clock())
        assert await state.get_online_nodes() == [node_id]
        assert await state.get_node_id(b"node-key") == node_id
        assert await state.get_known_public_keys() == {b"known-1", b"known-2"}
        pulled = await state.pull_message_ins(node_id, limit=10)
        assert [message.metadata.message_id for message in pulled] == [
            waiting.metadata.message_id,
            answered.metadata.message_id,
        ]
        assert pulled[0] == waiting

        clock.advance(31.0)  # online_until (now + ping_interval) survived the reopen
        assert await state.get_online_nodes() == []


async def test_reopened_database_keeps_the_pending_queue_and_stopped_runs_out_of_it(
    reopen: Reopen, clock: FakeClock
) -> None:
    """Statuses are stored, not derived: a run stopped while pending is never claimed."""
    async with reopen() as state:
        stopped = await state.create_run("a", "1", "", {}, ConfigRecord())
        clock.advance(1.0)
        pending = await state.create_run("a", "1", "", {}, ConfigRecord())
        assert await state.update_run_status(stopped, RunStatus(FINISHED, STOPPED))

    async with reopen() as state:
        assert await state.get_run_statuses([stopped, pending]) == {
            stopped: RunStatus(FINISHED, STOPPED),
            pending: RunStatus(PENDING),
        }
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        assert claimed.run_id == pending
        assert claimed.status == RunStatus(STARTING)


async def test_reopened_database_keeps_replies_until_taken(
    reopen: Reopen, clock: FakeClock
) -> None:
    """A reply stored before a restart is handed to the ServerApp after it, exactly once."""
    async with reopen() as state:
        node_id = await state.create_node(ping_interval=30.0)
        run_id = await state.create_run("a", "1", "", {}, ConfigRecord())
        sent = instruction(run_id, node_id, clock)
        sent.metadata.message_id = await state.store_message_ins(sent)
        await state.pull_message_ins(node_id)
        answer = reply(sent, clock)
        answer.metadata.message_id = await state.store_message_res(answer)

    async with reopen() as state:
        assert await state.pull_message_ins(node_id) == []  # delivered_at survived
        assert await state.take_replies(run_id, [sent.metadata.message_id]) == [answer]
        [again] = await state.take_replies(run_id, [sent.metadata.message_id])
        assert again.error.code == rules.MESSAGE_UNAVAILABLE


async def test_reopened_database_keeps_owners_reservations_and_leases(
    reopen: Reopen, clock: FakeClock
) -> None:
    """A run's owner, a pending run's reservation and the leases are stored, not remembered."""
    async with reopen() as state:
        await state.register_replica(REPLICA, 10.0, "restarted")
        lapses = clock.now + 10.0
        owned = await state.create_run("a", "1", "", {}, ConfigRecord())
        clock.advance(1.0)
        reserved = await state.create_run("a", "1", "", {}, ConfigRecord())
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        assert claimed.run_id == owned
        assert await state.reserve_pending_run(REPLICA) == reserved
        leases = await state.get_replica_leases()

    async with reopen() as state:
        run = await state.get_run(owned)
        assert run is not None
        assert (run.owner, run.status) == (REPLICA, RunStatus(STARTING))
        assert await state.get_replica_leases() == leases == {REPLICA: lapses}
        assert await state.claim_pending_run("another") is None
        claimed = await state.claim_pending_run(REPLICA)
        assert claimed is not None
        assert claimed.run_id == reserved
