"""State: one async protocol (``LinkState``) with an in-memory and a SQLite backend."""

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
from superlink_async.state.factory import IN_MEMORY_DATABASE, open_state

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
