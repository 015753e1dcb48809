"""The state rules on their own: pure decisions over plain values, whatever the storage.

The shared suite (``test_linkstate.py``) pins that every backend applies them; these pin the
rules themselves, over the whole range of their inputs where hypothesis can reach it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flwr.common import ConfigRecord as FlwrConfigRecord
from flwr.server.superlink.linkstate import InMemoryLinkState as FlwrInMemoryLinkState
from flwr.server.superlink.linkstate import SqliteLinkState as FlwrSqliteLinkState
from hypothesis import assume, given
from hypothesis import strategies as st

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
    LostReplica,
    MessageRejectedError,
    PublicKeyInUseError,
    RunStatus,
)
from superlink_async.wire.message_pb2 import Message, Metadata
from superlink_async.wire.recorddict_pb2 import RecordDict

# Unix seconds around now, and durations, as the wire's doubles carry them.
instants = st.floats(min_value=1e9, max_value=4e9, allow_nan=False)
durations = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
node_ids = st.integers(min_value=2, max_value=2**64 - 1)
run_ids = st.integers(min_value=1, max_value=2**64 - 1)


# --- Node liveness -------------------------------------------------------------------------
@pytest.fixture(params=["in-memory", "sqlite"])
def flwr_state(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One of flwr 1.18.0's own LinkState backends, the contract this one matches."""
    if request.param == "in-memory":
        yield FlwrInMemoryLinkState()
    else:
        state = FlwrSqliteLinkState(":memory:")
        state.initialize()
        yield state


def test_the_liveness_boundary_is_flwr_1_18s(
    flwr_state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference lists a node online strictly before ``online_until``; so does the rule."""
    created = 1_750_000_000.0
    monkeypatch.setattr(time, "time", lambda: created)
    run_id = flwr_state.create_run(None, None, None, {}, FlwrConfigRecord())
    node_id = flwr_state.create_node(30.0)
    online_until = created + 30.0

    for now in (online_until - 0.001, online_until, online_until + 0.001):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        listed = node_id in flwr_state.get_nodes(run_id)
        assert rules.is_online(online_until, now) is listed, now


@given(online_until=instants, now=instants)
def test_a_node_is_online_exactly_while_its_deadline_is_ahead(
    online_until: float, now: float
) -> None:
    assert rules.is_online(online_until, now) is (now < online_until)


@given(online_until=instants, now=instants, later=durations)
def test_a_lapsed_node_stays_offline_until_it_pings(
    online_until: float, now: float, later: float
) -> None:
    if not rules.is_online(online_until, now):
        assert not rules.is_online(online_until, now + later)


@given(now=instants, ping_interval=durations)
def test_a_ping_keeps_a_node_online_at_least_as_long_as_registering(
    now: float, ping_interval: float
) -> None:
    created = rules.online_until_on_creation(now, ping_interval)
    pinged = rules.online_until_after_ping(now, ping_interval)
    assert created == now + ping_interval
    assert pinged == now + rules.PING_PATIENCE * ping_interval
    assert pinged >= created


# --- Key hand-over -------------------------------------------------------------------------
@given(now=instants)
def test_a_free_key_displaces_nobody(now: float) -> None:
    assert rules.displaced_key_holder(None, now) is None


@given(holder=node_ids, online_until=instants, now=instants)
def test_a_key_moves_off_an_offline_holder_and_never_off_an_online_one(
    holder: int, online_until: float, now: float
) -> None:
    key_holder = rules.KeyHolder(holder, online_until)
    if rules.is_online(online_until, now):
        with pytest.raises(PublicKeyInUseError):
            rules.displaced_key_holder(key_holder, now)
    else:
        assert rules.displaced_key_holder(key_holder, now) == holder


# --- Instructions --------------------------------------------------------------------------
@given(run_id=run_ids, node_id=node_ids, run_known=st.booleans(), node_known=st.booleans())
def test_an_instruction_is_stored_exactly_when_its_run_and_destination_exist(
    run_id: int, node_id: int, run_known: bool, node_known: bool
) -> None:
    """An offline destination is no reason to refuse: it may return before the TTL lapses."""
    rejection = rules.instruction_rejection(
        Metadata(run_id=run_id, dst_node_id=node_id), run_known, node_known
    )
    if run_known and node_known:
        assert rejection is None
    elif not run_known:
        assert str(rejection) == f"Invalid run ID for Message: {run_id}"
    else:
        assert str(rejection) == f"Invalid destination node ID for Message: {node_id}"


# --- Replies -------------------------------------------------------------------------------
def instruction_metadata(created_at: float, ttl: float, node_id: int = 7) -> Metadata:
    return Metadata(
        message_id="ins-1",
        run_id=42,
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=node_id,
        created_at=created_at,
        ttl=ttl,
    )


def reply_metadata(instruction: Metadata, created_at: float, ttl: float) -> Metadata:
    return Metadata(
        run_id=instruction.run_id,
        src_node_id=instruction.dst_node_id,
        dst_node_id=SUPERLINK_NODE_ID,
        reply_to_message_id=instruction.message_id,
        created_at=created_at,
        ttl=ttl,
    )


@given(created_at=instants, ttl=st.floats(min_value=1.0, max_value=1e5), elapsed=st.floats(0, 1))
def test_a_first_reply_within_the_instructions_life_is_accepted(
    created_at: float, ttl: float, elapsed: float
) -> None:
    ins = instruction_metadata(created_at, ttl)
    now = created_at + elapsed * ttl * 0.99
    res = reply_metadata(ins, now, ttl - (now - created_at))
    assert rules.reply_rejection(ins, False, res, now) is None


@pytest.mark.parametrize(
    ("defect", "reason"),
    [
        ("missing", "Message with ID ins-1 does not exist."),
        (
            "expired",
            "Failed to store Message: the message it is replying to (with ID ins-1) has expired",
        ),
        ("other node", "Message with ID ins-1 was not sent to node 8"),
        ("other run", "`metadata.run_id` is invalid"),
        ("answered", "Message with ID ins-1 already has a reply"),
        (
            "ttl too long",
            "Received Message with TTL 50.20 exceeding the allowed maximum TTL 50.00.",
        ),
    ],
)
def test_each_defect_of_a_reply_is_refused_with_the_references_reason(
    defect: str, reason: str
) -> None:
    ins = instruction_metadata(1000.0, 60.0)
    now = 1010.0
    res = reply_metadata(ins, now, 10.0)
    answered = False
    stored: Metadata | None = ins
    if defect == "missing":
        stored = None
    elif defect == "expired":
        now = 1060.0
    elif defect == "other node":
        res.src_node_id = 8
    elif defect == "other run":
        res.run_id = 43
    elif defect == "answered":
        answered = True
    else:
        res.ttl = 50.2
    rejection = rules.reply_rejection(stored, answered, res, now)
    assert isinstance(rejection, MessageRejectedError)
    assert str(rejection) == reason


@given(excess=st.floats(min_value=-10.0, max_value=10.0))
def test_a_reply_may_outlive_its_instruction_by_the_tolerance_only(excess: float) -> None:
    ins = instruction_metadata(1000.0, 60.0)
    res = reply_metadata(ins, 1010.0, 50.0 + excess)
    assume(abs(excess - rules.REPLY_TTL_TOLERANCE) > 1e-9)
    error = rules.reply_ttl_error(ins, res)
    assert (error is None) is (excess < rules.REPLY_TTL_TOLERANCE)


@given(created_at=instants, ttl=durations, now=instants)
def test_a_ttl_lapses_at_the_instant_it_ends(created_at: float, ttl: float, now: float) -> None:
    assert rules.ttl_lapsed(created_at, ttl, now) is (created_at + ttl <= now)
    assert rules.ttl_lapsed(created_at, ttl, created_at + ttl)
    meta = Metadata(created_at=created_at, ttl=ttl)
    assert rules.is_expired(meta, now) is rules.ttl_lapsed(created_at, ttl, now)


# --- Taking replies ------------------------------------------------------------------------
@given(run_id=run_ids, others=st.lists(st.sampled_from([0, 1]), max_size=5))
def test_a_run_may_take_only_its_own_instructions_replies(run_id: int, others: list[int]) -> None:
    instructions = [
        Metadata(message_id=f"m{i}", run_id=run_id ^ offset) for i, offset in enumerate(others)
    ]
    mismatch = rules.run_mismatch(run_id, instructions)
    if all(offset == 0 for offset in others):
        assert mismatch is None
    else:
        first = next(i for i, offset in enumerate(others) if offset)
        assert str(mismatch) == f"Message m{first} does not belong to run {run_id}"


def stored_instruction(created_at: float, ttl: float) -> Message:
    return Message(metadata=instruction_metadata(created_at, ttl), content=RecordDict())


def stored_reply(instruction: Message, created_at: float, ttl: float) -> Message:
    return Message(
        metadata=reply_metadata(instruction.metadata, created_at, ttl), content=RecordDict()
    )


@given(
    has_instruction=st.booleans(),
    instruction_ttl=st.floats(min_value=0.0, max_value=100.0),
    reply_ttl=st.none() | st.floats(min_value=0.0, max_value=100.0),
    online_until=st.none() | st.floats(min_value=900.0, max_value=1200.0),
    elapsed=st.floats(min_value=0.0, max_value=200.0),
)
def test_what_a_serverapp_pull_hands_out_for_one_instruction(
    has_instruction: bool,
    instruction_ttl: float,
    reply_ttl: float | None,
    online_until: float | None,
    elapsed: float,
) -> None:
    """Missing or expired instruction: MESSAGE_UNAVAILABLE. A live reply: the reply, even from
    a node gone offline since. An expired one: REPLY_MESSAGE_UNAVAILABLE. No reply: wait while
    the destination is online, NODE_UNAVAILABLE once it is offline or gone."""
    created_at = 1000.0
    now = created_at + elapsed
    ins = stored_instruction(created_at, instruction_ttl) if has_instruction else None
    res = None if ins is None or reply_ttl is None else stored_reply(ins, created_at, reply_ttl)

    result = rules.result_for("ins-1", ins, res, online_until, now)

    if ins is None or rules.is_expired(ins.metadata, now):
        assert result is not None
        assert result.error.code == rules.MESSAGE_UNAVAILABLE
    elif res is not None:
        if rules.is_expired(res.metadata, now):
            assert result is not None
            assert result.error.code == rules.REPLY_MESSAGE_UNAVAILABLE
        else:
            assert result is res
    elif online_until is not None and rules.is_online(online_until, now):
        assert result is None
    else:
        assert result is not None
        assert result.error.code == rules.NODE_UNAVAILABLE
    if result is not None and result is not res:
        meta = result.metadata
        assert meta.reply_to_message_id == "ins-1"
        assert (meta.src_node_id, meta.dst_node_id) == (SUPERLINK_NODE_ID, SUPERLINK_NODE_ID)
        assert meta.ttl >= 0.0
        assert meta.created_at == now


# --- Runs ----------------------------------------------------------------------------------
statuses = st.sampled_from([PENDING, STARTING, RUNNING, FINISHED])
sub_statuses = st.sampled_from(["", COMPLETED, FAILED, STOPPED, "bogus"])


@given(current=statuses, new=statuses, sub_status=sub_statuses)
def test_a_run_moves_forward_only_and_finishes_with_a_valid_sub_status(
    current: str, new: str, sub_status: str
) -> None:
    error = rules.transition_error(RunStatus(current), RunStatus(new, sub_status))
    forward = (current, new) in {
        (PENDING, STARTING),
        (STARTING, RUNNING),
        (RUNNING, FINISHED),
        (PENDING, FINISHED),
        (STARTING, FINISHED),
    }
    if new == FINISHED:
        valid_sub_status = sub_status in (FAILED, STOPPED) or (
            sub_status == COMPLETED and current == RUNNING
        )
    else:
        valid_sub_status = sub_status == ""
    assert (error is None) is (forward and valid_sub_status)


@given(run_id=run_ids)
def test_a_run_is_stored_with_an_empty_context_of_its_own(run_id: int) -> None:
    context = rules.context_at_creation(run_id)
    assert (context.run_id, context.node_id) == (run_id, 0)
    assert not context.HasField("state")


def test_new_ids_avoid_the_values_the_wire_reserves() -> None:
    assert all(rules.new_node_id() not in (0, SUPERLINK_NODE_ID) for _ in range(1000))
    assert all(rules.new_run_id() != 0 for _ in range(1000))


# --- Replicas ------------------------------------------------------------------------------
@given(instants, durations)
def test_a_lease_lapses_at_its_end_and_not_before(now: float, lease: float) -> None:
    until = rules.lease_until(now, lease)
    assert until == now + lease
    assert rules.lease_lapsed(until, until)
    assert not rules.lease_lapsed(until, until - max(lease, 1.0))


def test_a_reap_drops_lapsed_leases_but_never_the_reapers_own() -> None:
    assert rules.reapable("a", 100.0, 100.0, None)
    assert rules.reapable("a", 100.0, 100.0, "b")
    assert not rules.reapable("a", 100.0, 100.0, "a")
    assert not rules.reapable("a", 100.0, 99.0, "b")


def test_a_claim_ranks_its_own_reservation_first_then_unreserved_runs_never_others() -> None:
    assert rules.claim_rank("a", "a") == 0
    assert rules.claim_rank("", "a") == 1
    assert rules.claim_rank("b", "a") is None


def test_what_a_reap_did_is_grouped_by_replica_runs_oldest_first() -> None:
    """Dropped leases that held nothing are listed too; orphans' holders get their own entry."""
    failed = [
        rules.HeldRun(3, "a", ("2025-01-01T00:00:02", 3)),
        rules.HeldRun(1, "a", ("2025-01-01T00:00:01", 9)),
        rules.HeldRun(7, "", ("2025-01-01T00:00:00", 1)),
    ]
    released = [rules.HeldRun(5, "a", ("2025-01-01T00:00:03", 5))]
    assert rules.lost_replicas(["c", "a"], failed, released) == [
        LostReplica("", [7], []),
        LostReplica("a", [1, 3], [5]),
        LostReplica("c", [], []),
    ]
    assert rules.oldest_first(failed) == [7, 1, 3]


def test_a_lost_replicas_runs_fail_with_the_text_for_their_holder_asked_once() -> None:
    asked: list[str] = []

    def details(replica_id: str) -> str:
        asked.append(replica_id)
        return f"replica {replica_id} lost"

    runs = [rules.HeldRun(n, holder, ("", n)) for n, holder in enumerate("aab")]
    assert rules.details_by_holder(runs, details) == {
        0: "replica a lost",
        1: "replica a lost",
        2: "replica b lost",
    }
    assert asked == ["a", "b"]
    assert rules.lost_run_status("gone") == RunStatus(FINISHED, FAILED, "gone")
