"""The state rules every backend applies, as pure functions over plain values.

Ids, timestamps, node liveness, the key hand-over, which instructions and replies are stored,
run transitions, TTLs, the synthetic replies a ServerApp pull hands out, and replica leases
(which runs a lost replica takes with it). A backend reads
what a rule needs from its storage, asks the rule, and stores the outcome: the rules hold no
state and touch no storage, so a new backend adds queries, not rules, and the backends cannot
drift apart. The SQLite backend also calls some of them from inside its SQL statements.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

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
    RunMismatchError,
    RunStatus,
)
from superlink_async.wire.error_pb2 import Error
from superlink_async.wire.message_pb2 import Context, Message, Metadata

# Error codes flwr 1.18.0 uses in synthetic replies (flwr.common.constant.ErrorCode).
MESSAGE_UNAVAILABLE = 3
REPLY_MESSAGE_UNAVAILABLE = 4
NODE_UNAVAILABLE = 5

MESSAGE_UNAVAILABLE_REASON = (
    "Error: Message Unavailable - The requested message could not be found in the database. "
    "It may have expired due to its TTL or never existed."
)
REPLY_MESSAGE_UNAVAILABLE_REASON = (
    "Error: Reply Message Unavailable - The reply message has expired."
)
NODE_UNAVAILABLE_REASON = (
    "Error: Node Unavailable - The destination node is currently unavailable. "
    "It exceeds twice the time limit specified in its last ping."
)

#: A Ping keeps a node online for this many ping intervals (flwr's PING_PATIENCE).
PING_PATIENCE = 2

#: A reply may outlive its instruction by at most this much (seconds), as the reference allows.
REPLY_TTL_TOLERANCE = 0.1

_RESERVED_NODE_IDS = frozenset({0, SUPERLINK_NODE_ID})

_ALLOWED_TRANSITIONS = {
    (PENDING, STARTING),
    (STARTING, RUNNING),
    (RUNNING, FINISHED),
    (PENDING, FINISHED),
    (STARTING, FINISHED),
}
_FINISHED_SUB_STATUSES = frozenset({COMPLETED, FAILED, STOPPED})


def random_uint64() -> int:
    """A random unsigned 64-bit id, as the reference draws node and run ids."""
    return int.from_bytes(os.urandom(8), "little")


def new_node_id() -> int:
    """A random node id that is neither 0 (unset) nor 1 (the SuperLink)."""
    while (node_id := random_uint64()) in _RESERVED_NODE_IDS:
        pass
    return node_id


def new_run_id() -> int:
    """A random run id; 0 is avoided because the wire cannot tell it from unset."""
    while (run_id := random_uint64()) == 0:
        pass
    return run_id


def new_message_id() -> str:
    """A fresh message id (a UUID4 string, as the reference assigns)."""
    return str(uuid.uuid4())


def iso_timestamp(unix_seconds: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, the form the flwr CLI parses."""
    return datetime.fromtimestamp(unix_seconds, tz=timezone.utc).isoformat()


# --- Node liveness -------------------------------------------------------------------------
def is_online(online_until: float, now: float) -> bool:
    """Whether a node whose liveness lasts until ``online_until`` is online at ``now``.

    The one boundary every check uses: online strictly before ``online_until``, offline from
    that instant on, as flwr 1.18.0 lists online nodes (``online_until > now`` in both of its
    backends). The reference's own reply check still counted a node online at the instant
    itself; here the online list, the online count, the key hand-over and the replies owed
    to a node all agree.
    """
    return online_until > now


def online_until_on_creation(now: float, ping_interval: float) -> float:
    """A new node is online for one ``ping_interval`` (a Ping extends it, as the reference)."""
    return now + ping_interval


def online_until_after_ping(now: float, ping_interval: float) -> float:
    """A Ping keeps its node online for ``PING_PATIENCE`` ping intervals from ``now``."""
    return now + PING_PATIENCE * ping_interval


# --- Node authentication -------------------------------------------------------------------
@dataclass(frozen=True)
class KeyHolder:
    """The node a public key is bound to, and until when that node is online."""

    node_id: int
    online_until: float


def displaced_key_holder(holder: KeyHolder | None, now: float) -> int | None:
    """The node a new node bound to a key replaces (to be deleted), or None if the key is free.

    ``PublicKeyInUseError`` while the holder is online: a second live SuperNode may not take
    over the key. An offline holder gives the key up, so that a SuperNode that died without
    DeleteNode can rejoin with its fixed key (the reference refused it forever).
    """
    if holder is None:
        return None
    if is_online(holder.online_until, now):
        raise PublicKeyInUseError
    return holder.node_id


# --- Messages ------------------------------------------------------------------------------
def instruction_rejection(
    instruction: Metadata, run_known: bool, destination_known: bool
) -> MessageRejectedError | None:
    """Why an instruction cannot be stored, or None: its run and destination must exist.

    An offline destination is accepted: it may come back before the TTL lapses.
    """
    if not run_known:
        return MessageRejectedError(f"Invalid run ID for Message: {instruction.run_id}")
    if not destination_known:
        return MessageRejectedError(
            f"Invalid destination node ID for Message: {instruction.dst_node_id}"
        )
    return None


def reply_rejection(
    instruction: Metadata | None, answered: bool, reply: Metadata, now: float
) -> MessageRejectedError | None:
    """Why ``reply`` cannot be stored, or None.

    ``instruction`` is the stored instruction it replies to (None if there is none) and
    ``answered`` whether that instruction has a reply already. Only the first reply of the
    node the instruction was sent to, for the same run, while the instruction lives, and
    with a TTL that does not outlive the instruction's is stored.
    """
    if instruction is None:
        return MessageRejectedError(f"Message with ID {reply.reply_to_message_id} does not exist.")
    if is_expired(instruction, now):
        return MessageRejectedError(
            "Failed to store Message: the message it is replying to "
            f"(with ID {instruction.message_id}) has expired"
        )
    if instruction.dst_node_id != reply.src_node_id:
        return MessageRejectedError(
            f"Message with ID {instruction.message_id} was not sent to node {reply.src_node_id}"
        )
    if instruction.run_id != reply.run_id:
        return MessageRejectedError("`metadata.run_id` is invalid")
    if answered:
        return MessageRejectedError(f"Message with ID {instruction.message_id} already has a reply")
    error = reply_ttl_error(instruction, reply)
    return None if error is None else MessageRejectedError(error)


# --- Runs ----------------------------------------------------------------------------------
def context_at_creation(run_id: int) -> Context:
    """The ServerApp context a run is stored with: empty, so that every run can be started.

    The reference gave runs created over ServerAppIo none, and left them unstartable.
    """
    return Context(run_id=run_id, node_id=0)


def transition_error(current: RunStatus, new: RunStatus) -> str | None:
    """Why ``current -> new`` is not allowed, or None if it is.

    Unlike the reference, which checked the sub-status of the *current* status (so a bad
    one got through), the sub-status is checked on the *new* status: a finished run needs
    completed/failed/stopped, any other status none; and a run that never ran cannot
    finish as completed.
    """
    if (current.status, new.status) not in _ALLOWED_TRANSITIONS:
        return f'Invalid status transition: from "{current.status}" to "{new.status}"'
    if new.status == FINISHED:
        if new.sub_status not in _FINISHED_SUB_STATUSES:
            return f'Invalid sub-status "{new.sub_status}" for status "{FINISHED}"'
        if current.status != RUNNING and new.sub_status == COMPLETED:
            return f'Invalid status transition: from "{current.status}" to "{FINISHED}:{COMPLETED}"'
    elif new.sub_status:
        return f'Invalid sub-status "{new.sub_status}" for status "{new.status}"'
    return None


def timestamp_field_for(status: str) -> str:
    """The run field stamped when a run enters ``status``."""
    return {STARTING: "starting_at", RUNNING: "running_at", FINISHED: "finished_at"}[status]


# --- Replicas ------------------------------------------------------------------------------
#: Statuses of a run whose ServerApp lives with the replica that claimed it (its owner): the
#: run cannot go on once that replica is gone.
HELD_STATUSES = (STARTING, RUNNING)


def lease_until(now: float, lease_seconds: float) -> float:
    """When a lease taken or renewed at ``now`` for ``lease_seconds`` lapses."""
    return now + lease_seconds


def lease_lapsed(until: float, now: float) -> bool:
    """Whether a lease lasting until ``until`` has lapsed at ``now``: from that instant on.

    The lease's clock is the backend's, as node liveness: replicas on several machines must
    keep their clocks synchronised, and any skew adds to the time a lost replica goes unseen.
    """
    return until <= now


def reapable(replica_id: str, until: float, now: float, reaper: str | None) -> bool:
    """Whether a reap by ``reaper`` (None: by no replica in particular) drops this lease.

    A lapsed lease is dropped, but never the reaper's own: a replica that reaps is alive,
    and a renewal of its own held up behind a busy state must not fail its runs.
    """
    return replica_id != reaper and lease_lapsed(until, now)


def claim_rank(reserved_by: str, replica_id: str) -> int | None:
    """Where a pending run reserved by ``reserved_by`` ("" if nobody) stands in a claim.

    0: reserved by the claiming replica, taken first; 1: reserved by nobody; None: reserved
    by another replica, never taken. Within a rank, the oldest run goes first.
    """
    if reserved_by == replica_id:
        return 0
    return 1 if not reserved_by else None


def lost_run_status(details: str) -> RunStatus:
    """What a run becomes when the replica holding it is gone."""
    return RunStatus(FINISHED, FAILED, details)


@dataclass(frozen=True)
class HeldRun:
    """A run a replica held (its owner, or the replica that reserved it while pending).

    ``order`` sorts runs oldest first: ``pending_at``, then creation order.
    """

    run_id: int
    holder: str
    order: tuple[str, int]


def oldest_first(runs: Iterable[HeldRun]) -> list[int]:
    """The runs' ids, oldest first."""
    return [run.run_id for run in sorted(runs, key=lambda run: run.order)]


def details_by_holder(runs: Iterable[HeldRun], details: Callable[[str], str]) -> dict[int, str]:
    """Each run's ``details`` text, asked once per holder (the replica it names)."""
    runs = list(runs)
    texts = {holder: details(holder) for holder in dict.fromkeys(run.holder for run in runs)}
    return {run.run_id: texts[run.holder] for run in runs}


def lost_replicas(
    dropped: Iterable[str], failed: Iterable[HeldRun], released: Iterable[HeldRun]
) -> list[LostReplica]:
    """What reaping did, one entry per replica, by replica id.

    ``dropped`` are the leases removed; ``failed`` the held runs finished as failed and
    ``released`` the reservations given back, of those replicas or of others without a
    lease (an owner reaped while its claim was in flight; runs claimed by no replica).
    """
    failed, released = list(failed), list(released)
    replicas = sorted({*dropped, *(run.holder for run in failed + released)})
    return [
        LostReplica(
            replica_id,
            oldest_first(run for run in failed if run.holder == replica_id),
            oldest_first(run for run in released if run.holder == replica_id),
        )
        for replica_id in replicas
    ]


def ttl_lapsed(created_at: float, ttl: float, now: float) -> bool:
    """Whether a message created at ``created_at`` with ``ttl`` has expired by ``now``.

    In float seconds, lapsed from the instant ``created_at + ttl`` on, in every check: a
    pull, a reply, a ServerApp pull, the purge and the counts.
    """
    return created_at + ttl <= now


def is_expired(metadata: Metadata, now: float) -> bool:
    """Whether a message's TTL has lapsed (``ttl_lapsed``)."""
    return ttl_lapsed(metadata.created_at, metadata.ttl, now)


def reply_ttl_error(instruction: Metadata, reply: Metadata) -> str | None:
    """Why a reply's TTL is too long for its instruction, or None."""
    allowed = instruction.created_at + instruction.ttl - reply.created_at
    if reply.ttl - allowed > REPLY_TTL_TOLERANCE:
        return (
            f"Received Message with TTL {reply.ttl:.2f} exceeding the allowed maximum "
            f"TTL {allowed:.2f}."
        )
    return None


def run_mismatch(run_id: int, instructions: Iterable[Metadata]) -> RunMismatchError | None:
    """Why a ServerApp of ``run_id`` may not take these instructions' replies, or None.

    Checked before anything is taken, so that a mismatch loses nothing.
    """
    for instruction in instructions:
        if instruction.run_id != run_id:
            return RunMismatchError(
                f"Message {instruction.message_id} does not belong to run {run_id}"
            )
    return None


def result_for(
    instruction_id: str,
    instruction: Message | None,
    reply: Message | None,
    destination_online_until: float | None,
    now: float,
) -> Message | None:
    """What a ServerApp pull hands out for one instruction id; None while still waiting.

    ``destination_online_until`` is None when the destination node is gone. A stored,
    unexpired reply is returned even if its node has gone offline since: the reference
    checked liveness first and threw such answers away.
    """
    if instruction is None or is_expired(instruction.metadata, now):
        return message_unavailable(instruction_id, now)
    if reply is not None:
        return reply_unavailable(instruction, now) if is_expired(reply.metadata, now) else reply
    if destination_online_until is None or not is_online(destination_online_until, now):
        return node_unavailable(instruction, now)
    return None


def message_unavailable(instruction_id: str, now: float) -> Message:
    """The synthetic reply for an instruction that is missing or expired."""
    return _error_reply(
        Metadata(reply_to_message_id=instruction_id, message_type="system", ttl=0.0),
        MESSAGE_UNAVAILABLE,
        MESSAGE_UNAVAILABLE_REASON,
        now,
    )


def node_unavailable(instruction: Message, now: float) -> Message:
    """The synthetic reply for an instruction whose destination is offline or gone."""
    return _error_reply(
        _reply_metadata(instruction, now), NODE_UNAVAILABLE, NODE_UNAVAILABLE_REASON, now
    )


def reply_unavailable(instruction: Message, now: float) -> Message:
    """The synthetic reply for an instruction whose stored reply has expired."""
    return _error_reply(
        _reply_metadata(instruction, now),
        REPLY_MESSAGE_UNAVAILABLE,
        REPLY_MESSAGE_UNAVAILABLE_REASON,
        now,
    )


def _reply_metadata(instruction: Message, now: float) -> Metadata:
    ins = instruction.metadata
    return Metadata(
        run_id=ins.run_id,
        reply_to_message_id=ins.message_id,
        group_id=ins.group_id,
        message_type=ins.message_type,
        ttl=max(ins.ttl - (now - ins.created_at), 0.0),
    )


def _error_reply(metadata: Metadata, code: int, reason: str, now: float) -> Message:
    metadata.message_id = new_message_id()
    metadata.src_node_id = SUPERLINK_NODE_ID
    metadata.dst_node_id = SUPERLINK_NODE_ID
    metadata.created_at = now
    return Message(metadata=metadata, error=Error(code=code, reason=reason))
