"""How records are encoded in the columns of the SQL backends (SQLite and PostgreSQL).

uint64 ids (runs, nodes) are stored as the signed int64 with the same bits: both databases'
integers are signed 64-bit. Messages keep their metadata in columns and their content or
error as the serialized protobuf; contexts, federation options and override configs are
serialized protobufs too, so nothing is lost (bytes values, bool versus int). A row is
anything that reads its columns by name (``sqlite3.Row``, ``asyncpg.Record``).

Below the encoding: the rules' inputs read from rows, and their outcomes, which both SQL
backends need alike around their different statements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from superlink_async.state import rules
from superlink_async.state.base import PENDING, RunNotFoundError, RunRecord, RunStatus, UserConfig
from superlink_async.state.codec import fill_user_config, user_config_from_proto
from superlink_async.state.common import NewRun
from superlink_async.wire import run_pb2
from superlink_async.wire.error_pb2 import Error
from superlink_async.wire.message_pb2 import Message, Metadata
from superlink_async.wire.recorddict_pb2 import ConfigRecord, RecordDict

#: A message's metadata columns, the same in both message tables of both backends.
METADATA_FIELDS = (
    "message_id, run_id, src_node_id, dst_node_id, reply_to_message_id, group_id, "
    "message_type, created_at, ttl"
)
#: A message's columns, its payload included.
MESSAGE_FIELDS = f"{METADATA_FIELDS}, content, error"
#: A run's columns, as ``run_from_row`` reads them.
RUN_FIELDS = (
    "run_id, fab_id, fab_version, fab_hash, override_config, federation_options, pending_at, "
    "starting_at, running_at, finished_at, status, sub_status, details, owner"
)
#: A held run's columns (``held_run_from_row``), the holder's column named ``holder``.
HELD_RUN_FIELDS = "run_id, pending_at, seq"

_UINT64_SIGN_BIT = 1 << 63
_UINT64_RANGE = 1 << 64


class Row(Protocol):
    """A result row whose columns are read by name."""

    def __getitem__(self, key: str, /) -> Any: ...


def to_db(value: int) -> int:
    """A uint64 as the signed int64 with the same bits (SQL integers are signed)."""
    return value - _UINT64_RANGE if value >= _UINT64_SIGN_BIT else value


def from_db(value: int) -> int:
    """The uint64 a stored signed int64 stands for."""
    return value + _UINT64_RANGE if value < 0 else value


def encode_user_config(config: UserConfig) -> bytes:
    """Serialize through the wire's ``map<string, Scalar>``, which keeps every value type."""
    holder = run_pb2.Run()
    fill_user_config(holder.override_config, config)
    return holder.SerializeToString()


def decode_user_config(blob: bytes) -> UserConfig:
    """The config ``encode_user_config`` stored."""
    return user_config_from_proto(run_pb2.Run.FromString(blob).override_config)


def run_status_from_row(row: Row) -> RunStatus:
    """The status columns of a run row."""
    return RunStatus(row["status"], row["sub_status"], row["details"])


def run_from_row(row: Row) -> RunRecord:
    """A run from a row of ``RUN_FIELDS``."""
    return RunRecord(
        run_id=from_db(row["run_id"]),
        fab_id=row["fab_id"],
        fab_version=row["fab_version"],
        fab_hash=row["fab_hash"],
        override_config=decode_user_config(row["override_config"]),
        pending_at=row["pending_at"],
        starting_at=row["starting_at"],
        running_at=row["running_at"],
        finished_at=row["finished_at"],
        status=run_status_from_row(row),
        federation_options=ConfigRecord.FromString(row["federation_options"]),
        owner=row["owner"],
    )


def message_params(message: Message, message_id: str) -> tuple[Any, ...]:
    """Column values (in ``MESSAGE_FIELDS`` order) for storing ``message`` as ``message_id``."""
    meta = message.metadata
    return (
        message_id,
        to_db(meta.run_id),
        to_db(meta.src_node_id),
        to_db(meta.dst_node_id),
        meta.reply_to_message_id,
        meta.group_id,
        meta.message_type,
        meta.created_at,
        meta.ttl,
        message.content.SerializeToString() if message.HasField("content") else None,
        message.error.SerializeToString() if message.HasField("error") else None,
    )


def message_from_row(row: Row) -> Message:
    """A message from a row of ``MESSAGE_FIELDS`` (``content`` and ``error`` may be NULL)."""
    message = Message(
        metadata=Metadata(
            message_id=row["message_id"],
            run_id=from_db(row["run_id"]),
            src_node_id=from_db(row["src_node_id"]),
            dst_node_id=from_db(row["dst_node_id"]),
            reply_to_message_id=row["reply_to_message_id"],
            group_id=row["group_id"],
            message_type=row["message_type"],
            created_at=row["created_at"],
            ttl=row["ttl"],
        )
    )
    if row["content"] is not None:
        message.content.CopyFrom(RecordDict.FromString(row["content"]))
    if row["error"] is not None:
        message.error.CopyFrom(Error.FromString(row["error"]))
    return message


# --- Rule inputs and outcomes over rows ------------------------------------------------------
def new_run_params(run: NewRun) -> tuple[Any, ...]:
    """Column values (``fab_id`` ... ``pending_at``, then ``status``) of a run to store."""
    return (
        run.fab_id,
        run.fab_version,
        run.fab_hash,
        encode_user_config(run.override_config),
        run.federation_options.SerializeToString(),
        run.pending_at,
        PENDING,
    )


def key_holder_from_row(row: Row | None) -> rules.KeyHolder | None:
    """The holder of a key from its ``node_id, online_until`` row (None: the key is free)."""
    return None if row is None else rules.KeyHolder(from_db(row["node_id"]), row["online_until"])


def transition_error_from_row(row: Row | None, run_id: int, new_status: RunStatus) -> str | None:
    """``rules.transition_error`` from the run's status row. ``RunNotFoundError`` if None."""
    if row is None:
        raise RunNotFoundError(run_id)
    return rules.transition_error(run_status_from_row(row), new_status)


def transition_params(
    run_id: int, new_status: RunStatus, stamp: str
) -> tuple[str, tuple[Any, ...]]:
    """The run column a transition stamps, and ``status, sub_status, details, stamp, run_id``.

    The column name comes from a fixed mapping (``rules.timestamp_field_for``), never from
    the caller, so statements may name it directly.
    """
    stamp_column = rules.timestamp_field_for(new_status.status)
    params = (new_status.status, new_status.sub_status, new_status.details, stamp, to_db(run_id))
    return stamp_column, params


def held_run_from_row(row: Row) -> rules.HeldRun:
    """A run a replica held, from a row of ``HELD_RUN_FIELDS`` and ``holder``."""
    return rules.HeldRun(from_db(row["run_id"]), row["holder"], (row["pending_at"], row["seq"]))


def lost_run_params(
    runs: Sequence[rules.HeldRun], details: Callable[[str], str], stamp: str
) -> list[tuple[Any, ...]]:
    """``status, sub_status, details, finished_at, run_id`` of each run a lost replica held."""
    texts = rules.details_by_holder(runs, details)
    params = []
    for run in runs:
        status = rules.lost_run_status(texts[run.run_id])
        params.append((status.status, status.sub_status, status.details, stamp, to_db(run.run_id)))
    return params


def joined_log(rows: Sequence[Row]) -> tuple[str, float]:
    """Log rows (``text, timestamp``, in order) as ``get_serverapp_log`` returns them."""
    latest = float(rows[-1]["timestamp"]) if rows else 0.0
    return "".join(row["text"] for row in rows), latest


def instructions_of_run(
    run_id: int, rows: Sequence[Row]
) -> tuple[dict[str, Message], dict[str, float | None]]:
    """The instructions a ServerApp asked for, by id, and their destinations' liveness.

    ``rows`` are metadata rows with the destination's ``online_until`` (NULL when the node
    is gone). ``RunMismatchError`` if one belongs to another run.
    """
    instructions = {row["message_id"]: message_from_row(row) for row in rows}
    mismatch = rules.run_mismatch(run_id, (ins.metadata for ins in instructions.values()))
    if mismatch is not None:
        raise mismatch
    return instructions, {row["message_id"]: row["online_until"] for row in rows}


def take_results(
    wanted: Sequence[str],
    instructions: dict[str, Message],
    online_until: dict[str, float | None],
    reply_rows: Sequence[Row],
    now: float,
) -> list[Message]:
    """What ``take_replies`` hands out for ``wanted``, in order (``rules.result_for``)."""
    replies = {row["reply_to_message_id"]: message_from_row(row) for row in reply_rows}
    results: list[Message] = []
    for ins_id in wanted:
        result = rules.result_for(
            ins_id, instructions.get(ins_id), replies.get(ins_id), online_until.get(ins_id), now
        )
        if result is not None:
            results.append(result)
    return results
