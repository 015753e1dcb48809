"""Pure rules both backends apply: ids, timestamps, run transitions, synthetic replies.

Kept free of storage so the memory and SQLite backends cannot drift apart.
"""

from __future__ import annotations

import os
import uuid
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
    RunStatus,
)
from superlink_async.wire.error_pb2 import Error
from superlink_async.wire.message_pb2 import Message, Metadata

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


def transition_error(current: RunStatus, new: RunStatus) -> str | None:
    """Why ``current -> new`` is not allowed, or None if it is.

    Unlike the reference (§17 bug 6), the sub-status is checked on the *new* status:
    a finished run needs completed/failed/stopped, any other status none; and a run
    that never ran cannot finish as completed.
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


def is_expired(metadata: Metadata, now: float) -> bool:
    """Whether a message's TTL has lapsed (float seconds, one rule everywhere: §17 bug 10)."""
    return metadata.created_at + metadata.ttl <= now


def reply_ttl_error(instruction: Metadata, reply: Metadata) -> str | None:
    """Why a reply's TTL is too long for its instruction, or None."""
    allowed = instruction.created_at + instruction.ttl - reply.created_at
    if reply.ttl - allowed > REPLY_TTL_TOLERANCE:
        return (
            f"Received Message with TTL {reply.ttl:.2f} exceeding the allowed maximum "
            f"TTL {allowed:.2f}."
        )
    return None


def result_for(
    instruction_id: str,
    instruction: Message | None,
    reply: Message | None,
    destination_online: bool,
    now: float,
) -> Message | None:
    """What a ServerApp pull hands out for one instruction id; None while still waiting.

    A stored, unexpired reply is returned even if its node has gone offline since: the
    reference checked liveness first and threw such answers away.
    """
    if instruction is None or is_expired(instruction.metadata, now):
        return message_unavailable(instruction_id, now)
    if reply is not None:
        return reply_unavailable(instruction, now) if is_expired(reply.metadata, now) else reply
    if not destination_online:
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
