"""The LinkState contract, pinned once and run against every backend (see conftest)."""

from __future__ import annotations

import dataclasses
import logging
import uuid

import anyio
import pytest

from superlink_async.logs import logger
from superlink_async.state import rules
from superlink_async.state.base import (
    COMPLETED,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    SUPERLINK_NODE_ID,
    LinkState,
    MessageRejectedError,
    NodeNotFoundError,
    PublicKeyInUseError,
    RunMismatchError,
    RunNotFoundError,
    RunStatus,
    UserConfig,
)
from superlink_async.state.memory import InMemoryLinkState
from superlink_async.testing.clock import START, FakeClock
from superlink_async.wire.message_pb2 import Context, Message, Metadata
from superlink_async.wire.recorddict_pb2 import ConfigRecord, ConfigRecordValue, RecordDict
from superlink_async.wire.transport_pb2 import Scalar

pytestmark = pytest.mark.anyio

PING = 30.0
TTL = 60.0
#: The replica the tests claim runs for.
REPLICA = "replica-a"


# --- Builders ------------------------------------------------------------------------------
def options(**values: float) -> ConfigRecord:
    return ConfigRecord(data={key: ConfigRecordValue(double=v) for key, v in values.items()})


async def new_run(state: LinkState, override_config: UserConfig | None = None) -> int:
    return await state.create_run(
        "flwrlabs/app", "1.0.0", "fabhash", override_config or {}, options(rounds=3.0)
    )


def instruction(run_id: int, node_id: int, created_at: float, ttl: float = TTL) -> Message:
    return Message(
        metadata=Metadata(
            run_id=run_id,
            src_node_id=SUPERLINK_NODE_ID,
            dst_node_id=node_id,
            group_id="round-1",
            ttl=ttl,
            message_type="train",
            created_at=created_at,
        ),
        content=RecordDict(configs={"cfg": options(lr=0.1)}),
    )


def reply(ins: Message, created_at: float, ttl: float = 10.0) -> Message:
    """The reply the instruction's node would send (tests tweak fields to break it)."""
    return Message(
        metadata=Metadata(
            run_id=ins.metadata.run_id,
            src_node_id=ins.metadata.dst_node_id,
            dst_node_id=SUPERLINK_NODE_ID,
            reply_to_message_id=ins.metadata.message_id,
            group_id=ins.metadata.group_id,
            ttl=ttl,
            message_type=ins.metadata.message_type,
            created_at=created_at,
        ),
        content=RecordDict(configs={"out": options(loss=0.5)}),
    )


async def send(
    state: LinkState, clock: FakeClock, ttl: float = TTL, run_id: int | None = None
) -> Message:
    """Store an instruction for a fresh node (and run, unless given); return it as stored."""
    node_id = await state.create_node(PING)
    run_id = run_id if run_id is not None else await new_run(state)
    message = instruction(run_id, node_id, clock.now, ttl)
    message.metadata.message_id = await state.store_message_ins(message)
    return message


async def answered(state: LinkState, clock: FakeClock) -> tuple[Message, Message]:
    """An instruction and its stored reply; the reply carries its assigned id."""
    ins = await send(state, clock)
    res = reply(ins, clock.now)
    res.metadata.message_id = await state.store_message_res(res)
    return ins, res


def assert_synthetic(result: Message, code: int, reason: str, ins_id: str, now: float) -> None:
    meta = result.metadata
    assert (result.error.code, result.error.reason) == (code, reason)
    assert (meta.src_node_id, meta.dst_node_id) == (SUPERLINK_NODE_ID, SUPERLINK_NODE_ID)
    assert meta.reply_to_message_id == ins_id
    assert meta.created_at == now
    assert uuid.UUID(meta.message_id)


# --- Nodes ---------------------------------------------------------------------------------
async def test_create_node_returns_distinct_ids_other_than_0_and_1(state: LinkState) -> None:
    ids = [await state.create_node(PING) for _ in range(20)]
    assert len(set(ids)) == 20
    assert not {0, SUPERLINK_NODE_ID} & set(ids)
    for node_id in ids:
        assert await state.node_exists(node_id)


async def test_node_ids_above_int64_survive_storage(
    state: LinkState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uint64 ids come back unchanged (SQLite stores them as signed int64)."""
    draws = iter([2**64 - 1, 2**63])
    monkeypatch.setattr(rules, "random_uint64", lambda: next(draws))
    node_id = await state.create_node(PING)
    run_id = await new_run(state)
    assert (node_id, run_id) == (2**64 - 1, 2**63)
    assert await state.get_online_nodes() == [node_id]
    assert (run := await state.get_run(run_id)) is not None
    assert run.run_id == run_id
    ins = instruction(run_id, node_id, START)
    ins.metadata.message_id = await state.store_message_ins(ins)
    [pulled] = await state.pull_message_ins(node_id)
    assert (pulled.metadata.run_id, pulled.metadata.dst_node_id) == (run_id, node_id)


async def test_new_node_is_online_for_one_ping_interval(state: LinkState, clock: FakeClock) -> None:
    node_id = await state.create_node(PING)
    clock.advance(PING - 0.25)
    assert await state.get_online_nodes() == [node_id]
    clock.advance(0.25)
    assert await state.get_online_nodes() == []


async def test_ping_keeps_node_online_for_twice_its_interval(
    state: LinkState, clock: FakeClock
) -> None:
    node_id = await state.create_node(1.0)
    assert await state.acknowledge_ping(node_id, PING)
    clock.advance(2 * PING - 0.25)
    assert await state.get_online_nodes() == [node_id]
    clock.advance(0.25)
    assert await state.get_online_nodes() == []


async def test_ping_brings_an_offline_node_back(state: LinkState, clock: FakeClock) -> None:
    node_id = await state.create_node(1.0)
    clock.advance(5.0)
    assert await state.get_online_nodes() == []
    assert await state.node_exists(node_id)
    assert await state.acknowledge_ping(node_id, 1.0)
    assert await state.get_online_nodes() == [node_id]


async def test_at_the_instant_its_liveness_lapses_a_node_is_offline_everywhere(
    state: LinkState, clock: FakeClock
) -> None:
    """One boundary, flwr 1.18.0's (``online_until > now``), in every place that asks.

    Listed, counted, holding its key and owed a reply: one instant before ``online_until``
    the node is online in all four, at ``online_until`` itself offline in all four.
    """
    holder, _ = await state.create_keyed_node(PING, b"key")
    run_id = await new_run(state)
    ins = instruction(run_id, holder, clock.now)
    ins.metadata.message_id = await state.store_message_ins(ins)
    online_until = clock.now + PING

    clock.now = online_until - 0.001
    assert await state.get_online_nodes() == [holder]
    assert (await state.get_stats()).nodes_online == 1
    with pytest.raises(PublicKeyInUseError):
        await state.create_keyed_node(PING, b"key")
    assert await state.take_replies(run_id, [ins.metadata.message_id]) == []

    clock.now = online_until
    assert rules.is_online(online_until, clock.now) is False
    assert await state.get_online_nodes() == []
    assert (await state.get_stats()).nodes_online == 0
    [result] = await state.take_replies(run_id, [ins.metadata.message_id])
    assert result.error.code == rules.NODE_UNAVAILABLE
    newcomer, replaced = await state.create_keyed_node(PING, b"key")
    assert (replaced, await state.get_node_id(b"key")) == (holder, newcomer)


async def test_ping_of_unknown_node_returns_false(state: LinkState) -> None:
    assert not await state.acknowledge_ping(12345, PING)
    assert not await state.node_exists(12345)


async def test_online_nodes_are_sorted_ascending(state: LinkState) -> None:
    ids = [await state.create_node(PING) for _ in range(10)]
    assert await state.get_online_nodes() == sorted(ids)


async def test_delete_node_forgets_the_node_and_frees_its_key(state: LinkState) -> None:
    node_id, _ = await state.create_keyed_node(PING, b"key")
    await state.delete_node(node_id)
    assert not await state.node_exists(node_id)
    assert await state.get_online_nodes() == []
    assert await state.get_node_id(b"key") is None
    other, replaced = await state.create_keyed_node(PING, b"key")
    assert replaced is None
    assert await state.get_node_id(b"key") == other


async def test_delete_unknown_node_raises_node_not_found(state: LinkState) -> None:
    with pytest.raises(NodeNotFoundError, match="Node 12345 not found"):
        await state.delete_node(12345)


# --- Node authentication -------------------------------------------------------------------
async def test_a_keyed_node_is_online_and_found_by_its_key(state: LinkState) -> None:
    node_id, replaced = await state.create_keyed_node(PING, b"key")
    assert replaced is None
    assert await state.get_online_nodes() == [node_id]
    assert await state.get_node_id(b"key") == node_id
    assert await state.get_node_id(b"other") is None


async def test_a_key_is_bound_to_its_node_only_until_that_node_is_deleted_or_displaced(
    state: LinkState, clock: FakeClock
) -> None:
    """The check of every signed Fleet call: this key, this node; asked twice, as a backend
    that keeps bindings would answer the second time from what it kept."""
    node_id, _ = await state.create_keyed_node(PING, b"key")
    other = await state.create_node(PING)
    for _ in range(2):
        assert await state.is_key_bound(b"key", node_id)
        assert not await state.is_key_bound(b"key", other)
        assert not await state.is_key_bound(b"unbound", node_id)
    await state.delete_node(node_id)
    assert not await state.is_key_bound(b"key", node_id)
    holder, _ = await state.create_keyed_node(PING, b"key")
    assert await state.is_key_bound(b"key", holder)
    clock.advance(2 * PING)  # the holder goes offline: a rejoin displaces it
    newcomer, displaced = await state.create_keyed_node(PING, b"key")
    assert displaced == holder
    assert not await state.is_key_bound(b"key", holder)
    assert await state.is_key_bound(b"key", newcomer)


async def test_a_key_held_by_an_online_node_creates_no_node(state: LinkState) -> None:
    """Creating and binding are one step: a refused key leaves no keyless node behind."""
    first, _ = await state.create_keyed_node(PING, b"key")
    with pytest.raises(PublicKeyInUseError, match="Public key already in use"):
        await state.create_keyed_node(PING, b"key")
    assert await state.get_online_nodes() == [first]
    assert (await state.get_stats()).nodes_registered == 1
    assert await state.get_node_id(b"key") == first


async def test_a_key_held_by_an_offline_node_moves_and_the_holder_is_deleted(
    state: LinkState, clock: FakeClock
) -> None:
    """A SuperNode that died without DeleteNode rejoins with its key (the reference refused it)."""
    old, _ = await state.create_keyed_node(PING, b"key")
    clock.advance(PING)
    new, replaced = await state.create_keyed_node(PING, b"key")
    assert replaced == old
    assert not await state.node_exists(old)
    assert await state.get_node_id(b"key") == new


async def test_a_key_held_by_a_pinging_node_stays_with_it(
    state: LinkState, clock: FakeClock
) -> None:
    holder, _ = await state.create_keyed_node(PING, b"key")
    clock.advance(PING - 1)
    assert await state.acknowledge_ping(holder, PING)
    clock.advance(PING + 1)
    with pytest.raises(PublicKeyInUseError):
        await state.create_keyed_node(PING, b"key")
    assert await state.get_node_id(b"key") == holder


async def test_a_binding_read_before_each_change_reads_changed_after_it(
    state: LinkState, clock: FakeClock
) -> None:
    """A key moved off an offline node and a deleted node both show (no stale copy)."""
    node_id, _ = await state.create_keyed_node(PING, b"key")
    assert await state.get_node_id(b"key") == node_id
    clock.advance(PING)
    newcomer, replaced = await state.create_keyed_node(PING, b"key")
    assert replaced == node_id
    assert await state.get_node_id(b"key") == newcomer
    await state.delete_node(newcomer)
    assert await state.get_node_id(b"key") is None


async def test_known_public_keys_are_replaced_whole_and_apart_from_bindings(
    state: LinkState,
) -> None:
    assert await state.get_known_public_keys() == set()
    await state.replace_known_public_keys([b"a", b"b"])
    await state.replace_known_public_keys([b"b", b"c"])
    assert await state.get_known_public_keys() == {b"b", b"c"}
    assert await state.get_node_id(b"b") is None


# --- Runs ----------------------------------------------------------------------------------
async def test_create_run_stores_a_pending_run_with_every_field(
    state: LinkState, clock: FakeClock
) -> None:
    config: UserConfig = {"lr": 0.1, "epochs": 3, "flag": True, "name": "x", "blob": b"\x00\xff"}
    run_id = await state.create_run("flwrlabs/app", "1.0.0", "fabhash", config, options(a=1.0))
    run = await state.get_run(run_id)
    assert run is not None
    assert (run.run_id, run.fab_id, run.fab_version, run.fab_hash) == (
        run_id,
        "flwrlabs/app",
        "1.0.0",
        "fabhash",
    )
    assert run.override_config == config
    assert {key: type(value) for key, value in run.override_config.items()} == {
        key: type(value) for key, value in config.items()
    }
    assert run.pending_at == rules.iso_timestamp(clock.now)
    assert run.pending_at.endswith("+00:00")
    assert (run.starting_at, run.running_at, run.finished_at) == ("", "", "")
    assert run.status == RunStatus(PENDING)
    assert run.federation_options == options(a=1.0)
    assert await state.get_federation_options(run_id) == options(a=1.0)


async def test_new_run_has_its_serverapp_context_from_birth(state: LinkState) -> None:
    """Every run is startable: the initial context exists as soon as the run."""
    run_id = await new_run(state)
    assert await state.get_serverapp_context(run_id) == Context(run_id=run_id, node_id=0)


async def test_unknown_run_reads_as_none(state: LinkState) -> None:
    assert await state.get_run(12345) is None
    assert await state.get_federation_options(12345) is None
    assert await state.get_serverapp_context(12345) is None


async def test_runs_are_listed_by_pending_at_then_creation_order(
    state: LinkState, clock: FakeClock
) -> None:
    clock.advance(10.0)
    late = await new_run(state)
    clock.now = START
    first = await new_run(state)
    second = await new_run(state)
    assert [run.run_id for run in await state.get_runs()] == [first, second, late]


async def test_run_statuses_leave_out_unknown_ids(state: LinkState) -> None:
    run_id = await new_run(state)
    assert await state.get_run_statuses([run_id, 12345]) == {run_id: RunStatus(PENDING)}


async def test_status_transitions_stamp_the_time_each_status_was_entered(
    state: LinkState, clock: FakeClock
) -> None:
    run_id = await new_run(state)
    stamps = []
    for status in (RunStatus(STARTING), RunStatus(RUNNING), RunStatus(FINISHED, COMPLETED, "ok")):
        clock.advance(1.5)
        assert await state.update_run_status(run_id, status)
        stamps.append(rules.iso_timestamp(clock.now))
    run = await state.get_run(run_id)
    assert run is not None
    assert [run.starting_at, run.running_at, run.finished_at] == stamps
    assert run.status == RunStatus(FINISHED, COMPLETED, "ok")


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], RunStatus(RUNNING)),
        ([], RunStatus(PENDING)),
        ([], RunStatus(FINISHED, COMPLETED)),
        ([RunStatus(STARTING)], RunStatus(FINISHED, COMPLETED)),
        ([RunStatus(STARTING)], RunStatus(STARTING)),
        ([RunStatus(STARTING), RunStatus(RUNNING)], RunStatus(FINISHED)),
        ([RunStatus(STARTING), RunStatus(RUNNING)], RunStatus(FINISHED, "bogus")),
        ([RunStatus(STARTING)], RunStatus(RUNNING, "x")),
        ([RunStatus(FINISHED, STOPPED)], RunStatus(RUNNING)),
    ],
)
async def test_invalid_status_transition_is_refused_logged_and_changes_nothing(
    state: LinkState,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    path: list[RunStatus],
    refused: RunStatus,
) -> None:
    """Out-of-order moves and wrong sub-statuses of the *new* status are refused."""
    monkeypatch.setattr(logger, "propagate", True)
    run_id = await new_run(state)
    for status in path:
        assert await state.update_run_status(run_id, status)
    before = await state.get_run(run_id)
    with caplog.at_level(logging.ERROR, logger=logger.name):
        assert not await state.update_run_status(run_id, refused)
    assert await state.get_run(run_id) == before
    assert [record.levelno for record in caplog.records] == [logging.ERROR]
    assert "Invalid" in caplog.records[0].getMessage()


async def test_status_update_of_unknown_run_raises_run_not_found(state: LinkState) -> None:
    with pytest.raises(RunNotFoundError, match="Run 12345 not found"):
        await state.update_run_status(12345, RunStatus(STARTING))


async def test_pending_run_is_the_oldest_pending_one(state: LinkState, clock: FakeClock) -> None:
    assert await state.get_pending_run_id() is None
    first = await new_run(state)
    clock.advance(1.0)
    await new_run(state)
    assert await state.get_pending_run_id() == first


async def test_run_stopped_while_pending_is_no_longer_pending(
    state: LinkState, clock: FakeClock
) -> None:
    """A stopped pending run must not block the queue."""
    stopped = await new_run(state)
    clock.advance(1.0)
    waiting = await new_run(state)
    assert await state.update_run_status(stopped, RunStatus(FINISHED, STOPPED))
    assert await state.get_pending_run_id() == waiting
    claimed = await state.claim_pending_run(REPLICA)
    assert claimed is not None
    assert claimed.run_id == waiting


async def test_claim_moves_the_oldest_pending_run_to_starting_and_returns_it(
    state: LinkState, clock: FakeClock
) -> None:
    first = await new_run(state)
    second = await new_run(state)
    clock.advance(2.0)
    claimed = await state.claim_pending_run(REPLICA)
    assert claimed is not None
    assert (claimed.run_id, claimed.status) == (first, RunStatus(STARTING))
    assert claimed.starting_at == rules.iso_timestamp(clock.now)
    assert await state.get_run(first) == claimed
    again = await state.claim_pending_run(REPLICA)
    assert again is not None
    assert again.run_id == second
    assert await state.claim_pending_run(REPLICA) is None


async def test_a_run_read_before_each_change_reads_changed_after_it(
    state: LinkState, clock: FakeClock
) -> None:
    """Claim, status update and a restart's failure show in the next read (no stale copy)."""

    async def status(run_id: int) -> RunStatus:
        run = await state.get_run(run_id)
        assert run is not None
        return run.status

    run_id = await new_run(state)
    assert await status(run_id) == RunStatus(PENDING)
    await state.claim_pending_run(REPLICA)
    assert await status(run_id) == RunStatus(STARTING)
    await state.update_run_status(run_id, RunStatus(RUNNING))
    assert await status(run_id) == RunStatus(RUNNING)
    await state.register_replica(REPLICA, 10.0, "SuperLink restarted")
    assert await status(run_id) == RunStatus(FINISHED, FAILED, "SuperLink restarted")


async def test_runs_given_and_returned_are_detached_from_storage(state: LinkState) -> None:
    config: UserConfig = {"lr": 0.1}
    federation = options(a=1.0)
    run_id = await state.create_run("f", "1", "h", config, federation)
    config["lr"] = 9.0
    federation.data["a"].double = 9.0
    run = await state.get_run(run_id)
    assert run is not None
    run.override_config["lr"] = 7.0
    run.federation_options.data["a"].double = 7.0
    fetched = await state.get_federation_options(run_id)
    assert fetched is not None
    fetched.data["a"].double = 7.0
    stored = await state.get_run(run_id)
    assert stored is not None
    assert stored.override_config == {"lr": 0.1}
    assert stored.federation_options == options(a=1.0)
    assert await state.get_federation_options(run_id) == options(a=1.0)


async def test_an_earlier_run_read_is_not_changed_by_later_updates(state: LinkState) -> None:
    """Frozen run records are replaced on update, so an earlier read never changes."""
    run_id = await new_run(state)
    before = await state.get_run(run_id)
    await state.update_run_status(run_id, RunStatus(STARTING))
    after = await state.get_run(run_id)
    assert before is not None
    assert after is not None
    assert before.status == RunStatus(PENDING)
    assert dataclasses.replace(after, status=before.status, starting_at="") == before


# --- ServerApp context and logs ------------------------------------------------------------
async def test_serverapp_context_is_replaced_and_detached(state: LinkState) -> None:
    run_id = await new_run(state)
    context = Context(run_id=run_id, node_id=0, run_config={"lr": Scalar(double=0.1)})
    await state.set_serverapp_context(run_id, context)
    context.run_config["lr"].double = 9.0
    fetched = await state.get_serverapp_context(run_id)
    assert fetched is not None
    assert fetched.run_config["lr"].double == 0.1
    fetched.run_config["lr"].double = 7.0
    again = await state.get_serverapp_context(run_id)
    assert again is not None
    assert again.run_config["lr"].double == 0.1


async def test_context_of_unknown_run_raises_run_not_found(state: LinkState) -> None:
    with pytest.raises(RunNotFoundError):
        await state.set_serverapp_context(12345, Context(run_id=12345))


async def test_serverapp_log_returns_chunks_after_a_timestamp_and_the_latest_stamp(
    state: LinkState, clock: FakeClock
) -> None:
    run_id = await new_run(state)
    assert await state.get_serverapp_log(run_id, 0.0) == ("", 0.0)
    for chunk in ("a\n", "b\n", "c\n"):
        clock.advance(1.25)
        await state.add_serverapp_log(run_id, chunk)
    assert await state.get_serverapp_log(run_id, 0.0) == ("a\nb\nc\n", START + 3.75)
    assert await state.get_serverapp_log(run_id, START + 1.25) == ("b\nc\n", START + 3.75)
    assert await state.get_serverapp_log(run_id, START + 3.75) == ("", 0.0)


async def test_logs_with_the_same_timestamp_are_all_kept_in_order(state: LinkState) -> None:
    """Two chunks in one clock tick must not collide."""
    run_id = await new_run(state)
    await state.add_serverapp_log(run_id, "first ")
    await state.add_serverapp_log(run_id, "second")
    assert await state.get_serverapp_log(run_id, 0.0) == ("first second", START)


async def test_logs_belong_to_their_run(state: LinkState) -> None:
    mine = await new_run(state)
    other = await new_run(state)
    await state.add_serverapp_log(other, "not mine")
    assert await state.get_serverapp_log(mine, 0.0) == ("", 0.0)


async def test_logs_of_unknown_run_raise_run_not_found(state: LinkState) -> None:
    with pytest.raises(RunNotFoundError):
        await state.add_serverapp_log(12345, "x")
    with pytest.raises(RunNotFoundError):
        await state.get_serverapp_log(12345, 0.0)


# --- Storing instructions ------------------------------------------------------------------
async def test_stored_instruction_gets_a_fresh_id_and_is_detached(
    state: LinkState, clock: FakeClock
) -> None:
    node_id = await state.create_node(PING)
    message = instruction(await new_run(state), node_id, clock.now)
    message_id = await state.store_message_ins(message)
    assert uuid.UUID(message_id).version == 4
    assert message.metadata.message_id == ""
    message.content.configs["cfg"].data["lr"].double = 9.0
    [pulled] = await state.pull_message_ins(node_id)
    expected = instruction(message.metadata.run_id, node_id, clock.now)
    expected.metadata.message_id = message_id
    assert pulled == expected


async def test_instruction_for_unknown_run_is_rejected(state: LinkState, clock: FakeClock) -> None:
    node_id = await state.create_node(PING)
    with pytest.raises(MessageRejectedError, match=r"^Invalid run ID for Message: 12345$"):
        await state.store_message_ins(instruction(12345, node_id, clock.now))


async def test_instruction_for_unknown_node_is_rejected(state: LinkState, clock: FakeClock) -> None:
    run_id = await new_run(state)
    with pytest.raises(
        MessageRejectedError, match=r"^Invalid destination node ID for Message: 12345$"
    ):
        await state.store_message_ins(instruction(run_id, 12345, clock.now))


async def test_a_batch_of_instructions_stores_the_valid_and_names_the_refused(
    state: LinkState, clock: FakeClock
) -> None:
    """One operation for a round's push: ids in order, refusals as errors, nothing else lost."""
    first, second = await state.create_node(PING), await state.create_node(PING)
    run_id = await new_run(state)
    batch = [
        instruction(run_id, first, clock.now),
        instruction(run_id, 12345, clock.now),
        instruction(54321, second, clock.now),
        instruction(run_id, second, clock.now),
    ]
    results = await state.store_messages_ins(batch)
    assert [type(result) for result in results] == [
        str,
        MessageRejectedError,
        MessageRejectedError,
        str,
    ]
    assert [str(result) for result in results[1:3]] == [
        "Invalid destination node ID for Message: 12345",
        "Invalid run ID for Message: 54321",
    ]
    [to_first] = await state.pull_message_ins(first)
    [to_second] = await state.pull_message_ins(second)
    assert [to_first.metadata.message_id, to_second.metadata.message_id] == [
        results[0],
        results[3],
    ]


async def test_instruction_for_an_offline_node_is_accepted(
    state: LinkState, clock: FakeClock
) -> None:
    node_id = await state.create_node(1.0)
    clock.advance(5.0)
    assert await state.store_message_ins(instruction(await new_run(state), node_id, clock.now))


# --- Node pulls ----------------------------------------------------------------------------
async def test_pull_hands_out_oldest_first_up_to_the_limit_and_only_once(
    state: LinkState, clock: FakeClock
) -> None:
    node_id = await state.create_node(PING)
    run_id = await new_run(state)
    ids = []
    for _ in range(3):
        clock.advance(0.5)
        ids.append(await state.store_message_ins(instruction(run_id, node_id, clock.now)))
    first = await state.pull_message_ins(node_id, limit=2)
    second = await state.pull_message_ins(node_id, limit=2)
    assert [m.metadata.message_id for m in first + second] == ids
    assert await state.pull_message_ins(node_id, limit=2) == []


async def test_a_node_that_found_nothing_gets_what_is_stored_for_it_later(
    state: LinkState, clock: FakeClock
) -> None:
    """Empty pulls leave no trace: each later instruction reaches the node's next pull."""
    node_id = await state.create_node(PING)
    run_id = await new_run(state)
    assert await state.pull_message_ins(node_id) == []
    first = await state.store_message_ins(instruction(run_id, node_id, clock.now))
    assert [m.metadata.message_id for m in await state.pull_message_ins(node_id)] == [first]
    assert await state.pull_message_ins(node_id) == []
    later = [await state.store_message_ins(instruction(run_id, node_id, clock.now)) for _ in "ab"]
    pulled = [await state.pull_message_ins(node_id, limit=1) for _ in range(3)]
    assert [[m.metadata.message_id for m in batch] for batch in pulled] == [
        [later[0]],
        [later[1]],
        [],
    ]


async def test_a_node_has_instructions_waiting_from_their_storing_until_their_pull(
    state: LinkState, clock: FakeClock
) -> None:
    """The cheap check behind early answers: never False while an instruction waits.

    It may stay True until a pull finds nothing (SQLite learns it then).
    """
    ins = await send(state, clock)
    node_id = ins.metadata.dst_node_id
    other = await state.create_node(PING)
    assert await state.has_instructions_waiting(node_id)
    assert not await state.has_instructions_waiting(other)
    assert len(await state.pull_message_ins(node_id)) == 1
    assert await state.pull_message_ins(node_id) == []
    assert not await state.has_instructions_waiting(node_id)


async def test_a_node_is_idle_while_its_key_is_bound_to_it_and_nothing_waits(
    state: LinkState, clock: FakeClock
) -> None:
    """The idle-poll question: the key names this node, and no instruction waits for it."""
    run_id = await new_run(state)
    node_id, _ = await state.create_keyed_node(PING, b"key")
    other, _ = await state.create_keyed_node(PING, b"other")
    assert await state.is_idle_node(b"key", node_id)
    assert not await state.is_idle_node(b"other", node_id)
    assert not await state.is_idle_node(b"unbound", node_id)
    await state.store_message_ins(instruction(run_id, node_id, clock.now))
    assert not await state.is_idle_node(b"key", node_id)
    assert await state.is_idle_node(b"other", other)
    assert len(await state.pull_message_ins(node_id)) == 1
    assert await state.pull_message_ins(node_id) == []
    assert await state.is_idle_node(b"key", node_id)


async def test_pull_only_returns_the_pulling_nodes_instructions(
    state: LinkState, clock: FakeClock
) -> None:
    ins = await send(state, clock)
    other = await state.create_node(PING)
    assert await state.pull_message_ins(other) == []
    [pulled] = await state.pull_message_ins(ins.metadata.dst_node_id)
    assert pulled.metadata.message_id == ins.metadata.message_id


async def test_pull_uses_float_seconds_for_ttl(state: LinkState, clock: FakeClock) -> None:
    """A 0.5 s TTL lapses after 0.5 s, not at the next whole second."""
    early = await send(state, clock, ttl=0.5)
    late = await send(state, clock, ttl=0.5)
    clock.advance(0.25)
    assert len(await state.pull_message_ins(early.metadata.dst_node_id)) == 1
    clock.advance(0.5)
    assert await state.pull_message_ins(late.metadata.dst_node_id) == []


async def test_concurrent_pulls_never_hand_out_an_instruction_twice(
    state: LinkState, clock: FakeClock
) -> None:
    """Pull is read-and-mark in one step: no instruction goes out twice."""
    node_id = await state.create_node(PING)
    run_id = await new_run(state)
    stored = {
        await state.store_message_ins(instruction(run_id, node_id, clock.now)) for _ in range(20)
    }
    pulled: list[str] = []

    async def drain() -> None:
        while batch := await state.pull_message_ins(node_id, limit=3):
            pulled.extend(m.metadata.message_id for m in batch)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(drain)
    assert sorted(pulled) == sorted(stored)


# --- Storing replies -----------------------------------------------------------------------
async def test_valid_reply_is_stored_under_a_fresh_id(state: LinkState, clock: FakeClock) -> None:
    ins = await send(state, clock)
    res = reply(ins, clock.now)
    res_id = await state.store_message_res(res)
    assert uuid.UUID(res_id).version == 4
    assert res_id != ins.metadata.message_id
    assert res.metadata.message_id == ""


async def test_reply_to_unknown_instruction_is_rejected(state: LinkState, clock: FakeClock) -> None:
    ins = await send(state, clock)
    res = reply(ins, clock.now)
    missing = str(uuid.uuid4())
    res.metadata.reply_to_message_id = missing
    with pytest.raises(MessageRejectedError, match=f"^Message with ID {missing} does not exist"):
        await state.store_message_res(res)


async def test_reply_to_expired_instruction_is_rejected(state: LinkState, clock: FakeClock) -> None:
    ins = await send(state, clock, ttl=5.0)
    clock.advance(5.0)
    with pytest.raises(MessageRejectedError, match="has expired"):
        await state.store_message_res(reply(ins, clock.now, ttl=1.0))


async def test_reply_from_a_node_the_instruction_was_not_sent_to_is_rejected(
    state: LinkState, clock: FakeClock
) -> None:
    ins = await send(state, clock)
    res = reply(ins, clock.now)
    res.metadata.src_node_id = await state.create_node(PING)
    with pytest.raises(MessageRejectedError):
        await state.store_message_res(res)


async def test_reply_for_another_run_is_rejected(state: LinkState, clock: FakeClock) -> None:
    ins = await send(state, clock)
    res = reply(ins, clock.now)
    res.metadata.run_id = await new_run(state)
    with pytest.raises(MessageRejectedError):
        await state.store_message_res(res)


async def test_second_reply_to_one_instruction_is_rejected(
    state: LinkState, clock: FakeClock
) -> None:
    """The first reply wins; a duplicate must neither replace it nor break pulls."""
    ins, res = await answered(state, clock)
    with pytest.raises(MessageRejectedError):
        await state.store_message_res(reply(ins, clock.now))
    [result] = await state.take_replies(ins.metadata.run_id, [ins.metadata.message_id])
    assert result == res


async def test_reply_ttl_may_outlive_its_instruction_only_by_the_tolerance(
    state: LinkState, clock: FakeClock
) -> None:
    ins = await send(state, clock, ttl=10.0)
    clock.advance(4.0)
    too_long = reply(ins, clock.now, ttl=6.0 + rules.REPLY_TTL_TOLERANCE + 0.05)
    with pytest.raises(MessageRejectedError, match=r"exceeding the allowed maximum TTL 6\.00"):
        await state.store_message_res(too_long)
    assert await state.store_message_res(reply(ins, clock.now, ttl=6.05))


# --- Taking replies ------------------------------------------------------------------------
async def test_take_replies_returns_the_reply_once_and_forgets_the_exchange(
    state: LinkState, clock: FakeClock
) -> None:
    ins, res = await answered(state, clock)
    run_id, ins_id = ins.metadata.run_id, ins.metadata.message_id
    assert await state.take_replies(run_id, [ins_id]) == [res]
    [again] = await state.take_replies(run_id, [ins_id])
    assert again.error.code == rules.MESSAGE_UNAVAILABLE
    with pytest.raises(MessageRejectedError, match="does not exist"):
        await state.store_message_res(reply(ins, clock.now))


async def test_take_replies_skips_instructions_still_waiting(
    state: LinkState, clock: FakeClock
) -> None:
    ins = await send(state, clock)
    run_id, ins_id = ins.metadata.run_id, ins.metadata.message_id
    assert await state.take_replies(run_id, [ins_id]) == []
    assert len(await state.pull_message_ins(ins.metadata.dst_node_id)) == 1
    assert await state.take_replies(run_id, [ins_id]) == []
    res_id = await state.store_message_res(reply(ins, clock.now))
    [result] = await state.take_replies(run_id, [ins_id])
    assert result.metadata.message_id == res_id


async def test_unknown_instruction_id_gets_message_unavailable(
    state: LinkState, clock: FakeClock
) -> None:
    missing = str(uuid.uuid4())
    run_id = await new_run(state)
    [result] = await state.take_replies(run_id, [missing])
    assert_synthetic(
        result, rules.MESSAGE_UNAVAILABLE, rules.MESSAGE_UNAVAILABLE_REASON, missing, clock.now
    )
    assert (result.metadata.run_id, result.metadata.message_type) == (0, "system")
    assert result.metadata.ttl == 0.0


async def test_expired_instruction_gets_message_unavailable_and_is_forgotten(
    state: LinkState, clock: FakeClock
) -> None:
    ins, _ = await answered(state, clock)
    run_id, ins_id = ins.metadata.run_id, ins.metadata.message_id
    clock.advance(TTL)
    [result] = await state.take_replies(run_id, [ins_id])
    assert_synthetic(
        result, rules.MESSAGE_UNAVAILABLE, rules.MESSAGE_UNAVAILABLE_REASON, ins_id, clock.now
    )
    assert await state.delete_run_messages(run_id) == 0


async def test_offline_destination_gets_node_unavailable(
    state: LinkState, clock: FakeClock
) -> None:
    ins = await send(state, clock)
    clock.advance(PING + 1.0)
    [result] = await state.take_replies(ins.metadata.run_id, [ins.metadata.message_id])
    assert_synthetic(
        result,
        rules.NODE_UNAVAILABLE,
        rules.NODE_UNAVAILABLE_REASON,
        ins.metadata.message_id,
        clock.now,
    )
    meta = result.metadata
    assert (meta.run_id, meta.group_id, meta.message_type) == (
        ins.metadata.run_id,
        "round-1",
        "train",
    )
    assert meta.ttl == pytest.approx(TTL - (PING + 1.0))
    assert await state.delete_run_messages(ins.metadata.run_id) == 0


async def test_deleted_destination_gets_node_unavailable_not_a_crash(
    state: LinkState, clock: FakeClock
) -> None:
    """An instruction outlives its node; asking for it must not fail."""
    ins = await send(state, clock)
    await state.delete_node(ins.metadata.dst_node_id)
    [result] = await state.take_replies(ins.metadata.run_id, [ins.metadata.message_id])
    assert result.error.code == rules.NODE_UNAVAILABLE


async def test_a_stored_reply_survives_its_node_going_offline(
    state: LinkState, clock: FakeClock
) -> None:
    """The reference answered NODE_UNAVAILABLE here and dropped the node's real answer."""
    ins = await send(state, clock)
    await state.store_message_res(reply(ins, clock.now, ttl=TTL - 1.0))
    clock.advance(PING + 1.0)
    [result] = await state.take_replies(ins.metadata.run_id, [ins.metadata.message_id])
    assert not result.HasField("error")
    assert result.metadata.reply_to_message_id == ins.metadata.message_id


async def test_expired_reply_gets_reply_unavailable(state: LinkState, clock: FakeClock) -> None:
    ins = await send(state, clock)
    await state.store_message_res(reply(ins, clock.now, ttl=5.0))
    clock.advance(5.0)
    [result] = await state.take_replies(ins.metadata.run_id, [ins.metadata.message_id])
    assert_synthetic(
        result,
        rules.REPLY_MESSAGE_UNAVAILABLE,
        rules.REPLY_MESSAGE_UNAVAILABLE_REASON,
        ins.metadata.message_id,
        clock.now,
    )
    assert result.metadata.ttl == pytest.approx(TTL - 5.0)


async def test_results_follow_the_order_of_the_requested_ids(
    state: LinkState, clock: FakeClock
) -> None:
    run_id = await new_run(state)
    exchanges = [await send(state, clock, run_id=run_id) for _ in range(3)]
    for ins in exchanges:
        await state.store_message_res(reply(ins, clock.now))
    ids = [ins.metadata.message_id for ins in reversed(exchanges)]
    results = await state.take_replies(run_id, ids)
    assert [r.metadata.reply_to_message_id for r in results] == ids


async def test_a_repeated_id_gets_one_result(state: LinkState, clock: FakeClock) -> None:
    ins, res = await answered(state, clock)
    ins_id = ins.metadata.message_id
    assert await state.take_replies(ins.metadata.run_id, [ins_id, ins_id]) == [res]


async def test_ids_of_another_run_raise_and_lose_nothing(
    state: LinkState, clock: FakeClock
) -> None:
    """A run mismatch is detected before anything is deleted."""
    mine, my_reply = await answered(state, clock)
    theirs, their_reply = await answered(state, clock)
    my_run = mine.metadata.run_id
    ids = [mine.metadata.message_id, theirs.metadata.message_id]
    with pytest.raises(RunMismatchError):
        await state.take_replies(my_run, ids)
    assert await state.take_replies(my_run, ids[:1]) == [my_reply]
    assert await state.take_replies(theirs.metadata.run_id, ids[1:]) == [their_reply]


# --- Deleting ------------------------------------------------------------------------------
async def test_delete_run_messages_removes_a_runs_exchanges_only(
    state: LinkState, clock: FakeClock
) -> None:
    run_id = await new_run(state)
    answered_ins = await send(state, clock, run_id=run_id)
    await state.store_message_res(reply(answered_ins, clock.now))
    waiting = await send(state, clock, run_id=run_id)
    other, other_reply = await answered(state, clock)
    assert await state.delete_run_messages(run_id) == 2
    assert await state.delete_run_messages(run_id) == 0
    assert await state.pull_message_ins(waiting.metadata.dst_node_id) == []
    [gone] = await state.take_replies(run_id, [answered_ins.metadata.message_id])
    assert gone.error.code == rules.MESSAGE_UNAVAILABLE
    assert await state.take_replies(other.metadata.run_id, [other.metadata.message_id]) == [
        other_reply
    ]


async def test_purge_deletes_expired_instructions_with_replies_and_expired_replies(
    state: LinkState, clock: FakeClock
) -> None:
    run_id = await new_run(state)
    short_answered = await send(state, clock, ttl=5.0, run_id=run_id)
    await state.store_message_res(reply(short_answered, clock.now, ttl=5.0))
    await send(state, clock, ttl=5.0, run_id=run_id)
    live = await send(state, clock, run_id=run_id)
    await state.store_message_res(reply(live, clock.now, ttl=5.0))
    kept = await send(state, clock, run_id=run_id)
    clock.advance(5.0)
    assert await state.purge_expired_messages() == 2 + 1 + 1
    assert await state.purge_expired_messages() == 0
    [gone] = await state.take_replies(run_id, [short_answered.metadata.message_id])
    assert gone.error.code == rules.MESSAGE_UNAVAILABLE
    assert await state.take_replies(run_id, [live.metadata.message_id]) == []
    assert len(await state.pull_message_ins(kept.metadata.dst_node_id)) == 1


async def test_stats_count_nodes_and_messages_by_stage(state: LinkState, clock: FakeClock) -> None:
    await send(state, clock)
    delivered = await send(state, clock)
    await state.pull_message_ins(delivered.metadata.dst_node_id)
    await state.store_message_res(reply(delivered, clock.now))
    stats = await state.get_stats()
    assert (stats.instructions_waiting, stats.instructions_delivered) == (1, 1)
    assert stats.replies_stored == 1
    assert stats.nodes_registered == stats.nodes_online >= 1
    clock.advance(TTL + 1.0)
    later = await state.get_stats()
    assert later.messages_expired == 2 and later.nodes_online == 0


# --- Memory backend only -------------------------------------------------------------------
async def test_memory_state_refuses_use_after_aclose() -> None:
    state = InMemoryLinkState()
    await state.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await state.create_node(PING)
