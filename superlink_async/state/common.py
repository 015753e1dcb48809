"""What every backend does above its storage, written once: backends subclass ``BackendBase``.

The decisions themselves are ``rules``'; this class holds the parts of the ``LinkState``
surface that are the same for any storage, so that a backend implements only what reads or
writes its tables.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from superlink_async.logs import logger
from superlink_async.state import rules
from superlink_async.state.base import MessageRejectedError, PoolUsage, RunStatus, UserConfig
from superlink_async.wire.message_pb2 import Message
from superlink_async.wire.recorddict_pb2 import ConfigRecord


@dataclass(frozen=True)
class NewRun:
    """A run to store as pending, with its initial context (``rules.context_at_creation``)."""

    fab_id: str
    fab_version: str
    fab_hash: str
    override_config: UserConfig
    federation_options: ConfigRecord
    pending_at: str


class BackendBase(ABC):
    """The shared half of a ``LinkState`` backend; time comes from ``clock``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    async def create_run(
        self,
        fab_id: str,
        fab_version: str,
        fab_hash: str,
        override_config: UserConfig,
        federation_options: ConfigRecord,
    ) -> int:
        """Store a pending run and its initial ServerApp context in one step; return its id."""
        pending_at = rules.iso_timestamp(self._clock())
        return await self._store_new_run(
            NewRun(fab_id, fab_version, fab_hash, override_config, federation_options, pending_at)
        )

    async def store_message_ins(self, message: Message) -> str:
        """Store an instruction (already validated); assign and return its id.

        ``MessageRejectedError`` if its run or destination node is unknown.
        """
        (result,) = await self.store_messages_ins([message])
        if isinstance(result, MessageRejectedError):
            raise result
        return result

    async def update_run_status(self, run_id: int, new_status: RunStatus) -> bool:
        """Apply a valid transition (``rules``) and stamp its time. ``RunNotFoundError``.

        An invalid one changes nothing and is logged; False.
        """
        if (error := await self._transition_run(run_id, new_status)) is not None:
            logger.error("%s", error)
            return False
        return True

    async def is_idle_node(self, public_key: bytes, node_id: int) -> bool:
        """Whether the key is bound to the node and nothing may wait for it: two lookups."""
        return await self.get_node_id(public_key) == node_id and not (
            await self.has_instructions_waiting(node_id)
        )

    async def is_key_bound(self, public_key: bytes, node_id: int) -> bool:
        """Whether the key is bound to the node: one lookup of ``get_node_id``."""
        return await self.get_node_id(public_key) == node_id

    @property
    def connection_pool(self) -> PoolUsage | None:
        """None: memory and SQLite keep no pool of connections."""
        return None

    async def listen(self, on_change: Callable[[], None]) -> None:
        """Wait until cancelled: a store only this process opens has no other writer to hear."""
        await anyio.sleep_forever()

    @abstractmethod
    async def get_node_id(self, public_key: bytes) -> int | None:
        """The node a key is bound to, if any."""

    @abstractmethod
    async def has_instructions_waiting(self, node_id: int) -> bool:
        """Whether an instruction may be waiting for ``node_id`` (see ``LinkState``)."""

    @abstractmethod
    async def _transition_run(self, run_id: int, new_status: RunStatus) -> str | None:
        """Move the run to ``new_status``, stamped, if ``rules.transition_error`` allows.

        Otherwise change nothing and return that error. ``RunNotFoundError``.
        """

    @abstractmethod
    async def _store_new_run(self, run: NewRun) -> int:
        """Store ``run`` and its initial context together under a fresh run id; return it."""

    @abstractmethod
    async def store_messages_ins(
        self, messages: Sequence[Message]
    ) -> list[str | MessageRejectedError]:
        """Each instruction's id, or why it was refused (``rules.instruction_rejection``)."""
