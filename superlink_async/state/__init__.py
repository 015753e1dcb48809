"""State: one async protocol (``LinkState``) with an in-memory and a SQLite backend.

``open_state`` is loaded on first use: it imports both backends (aiosqlite among them),
which importing the protocol's types must not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superlink_async.config import IN_MEMORY_DATABASE
from superlink_async.state.base import (
    LinkState,
    MessageRejectedError,
    NodeNotFoundError,
    PublicKeyInUseError,
    RunMismatchError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    SchemaVersionError,
    StateError,
)

if TYPE_CHECKING:
    from superlink_async.state.factory import open_state

__all__ = [
    "IN_MEMORY_DATABASE",
    "LinkState",
    "MessageRejectedError",
    "NodeNotFoundError",
    "PublicKeyInUseError",
    "RunMismatchError",
    "RunNotFoundError",
    "RunRecord",
    "RunStatus",
    "SchemaVersionError",
    "StateError",
    "open_state",
]


def __getattr__(name: str) -> Any:
    """``open_state``, imported when first asked for."""
    if name == "open_state":
        from superlink_async.state.factory import open_state  # noqa: PLC0415

        return open_state
    raise AttributeError(f"module 'superlink_async.state' has no attribute {name!r}")
