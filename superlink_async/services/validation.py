"""Structural checks on Messages, before anything is stored (reference: validate_message)."""

from __future__ import annotations

import math

from superlink_async.state.base import SUPERLINK_NODE_ID
from superlink_async.wire.message_pb2 import Message

#: Messages created before 2025-02-28 00:00 UTC cannot come from a 1.18-era peer.
EARLIEST_CREATED_AT = 1740700800.0

#: The longest liveness a CreateNode or Ping may ask for (seconds); longer is clamped to it.
#: A 1.18 SuperNode asks for 30 s; the reference took any number, and a node that asked for
#: 1e300 s (or infinity) stayed online, its key bound, forever after it was gone.
MAX_PING_INTERVAL = 86400.0

_CATEGORIES = frozenset({"train", "evaluate", "query", "system"})
_LEGACY_TYPES = frozenset({"get_parameters", "get_properties", "reconnect"})


def is_valid_message_type(message_type: str) -> bool:
    """``<category>`` or ``<category>.<identifier>``, or one of the legacy names."""
    if message_type in _CATEGORIES or message_type in _LEGACY_TYPES:
        return True
    category, dot, action = message_type.partition(".")
    return bool(dot) and category in _CATEGORIES and action.isidentifier()


def ping_interval_error(ping_interval: float) -> str | None:
    """Why a requested ping interval is refused (NaN, infinite, zero or negative), or None.

    The reference stored such values as they came: NaN failed in SQLite with a traceback,
    zero or a negative value made the node offline from the start.
    """
    if math.isfinite(ping_interval) and ping_interval > 0:
        return None
    return f"`ping_interval` must be a finite number of seconds above zero, not {ping_interval}"


def bounded_ping_interval(ping_interval: float) -> float:
    """An accepted ping interval, clamped to ``MAX_PING_INTERVAL``."""
    return min(ping_interval, MAX_PING_INTERVAL)


def validate_message(message: Message, *, is_reply: bool, now: float) -> list[str]:
    """Every reason ``message`` is malformed (empty if it is fine), in the reference's words."""
    metadata = message.metadata
    errors = []
    if metadata.message_id:
        errors.append("non-empty `metadata.message_id`")
    # NaN compares false with everything: each bound is written so that NaN fails it.
    if not (math.isfinite(metadata.created_at) and metadata.created_at >= EARLIEST_CREATED_AT):
        errors.append(
            "`metadata.created_at` must be a float that records the unix timestamp "
            "in seconds when the message was created."
        )
    if metadata.ttl <= 0:
        errors.append("`metadata.ttl` must be higher than zero")
    elif not math.isfinite(metadata.ttl):
        errors.append("`metadata.ttl` must be a finite number of seconds")
    if metadata.created_at + metadata.ttl <= now:
        errors.append("Message TTL has expired")
    if not metadata.src_node_id:
        errors.append("`metadata.src_node_id` is not set.")
    if not metadata.dst_node_id:
        errors.append("`metadata.dst_node_id` is not set.")
    if not metadata.message_type:
        errors.append("`metadata.message_type` MUST be set")
    elif not is_valid_message_type(metadata.message_type):
        errors.append(f"Invalid message type: '{metadata.message_type}'")
    if message.HasField("content") == message.HasField("error"):
        errors.append("Either message `content` or `error` MUST be set (but not both)")
    errors.extend(_direction_errors(message, is_reply))
    return errors


def _direction_errors(message: Message, is_reply: bool) -> list[str]:
    metadata = message.metadata
    superlink = f"{SUPERLINK_NODE_ID} (SuperLink node ID)"
    errors = []
    if is_reply:
        if not metadata.reply_to_message_id:
            errors.append("`metadata.reply_to_message_id` MUST be set.")
        if metadata.src_node_id == SUPERLINK_NODE_ID:
            errors.append(f"`metadata.src_node_id` is {superlink}")
        if metadata.dst_node_id != SUPERLINK_NODE_ID:
            errors.append(f"`metadata.dst_node_id` is not {superlink}")
    else:
        if metadata.reply_to_message_id:
            errors.append("`metadata.reply_to_message_id` MUST not be set.")
        if metadata.src_node_id != SUPERLINK_NODE_ID:
            errors.append(f"`metadata.src_node_id` is not {superlink}")
        if metadata.dst_node_id == SUPERLINK_NODE_ID:
            errors.append(f"`metadata.dst_node_id` is {superlink}")
    return errors
