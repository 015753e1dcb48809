"""The in-memory backend: plain dicts owned by the event loop's thread.

No method suspends (``listen`` only waits, touching nothing): the only coroutines they
await are this backend's own, which wait for nothing, so on one asyncio loop each runs start
to finish before any other: each is atomic without the lock the reference's threads needed.
The decisions are ``rules``'; this module only keeps the tables. Protobuf objects are copied
on the way in and out so callers can never mutate what is stored.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import Message as ProtoMessage

from superlink_async.state import rules
from superlink_async.state.base import (
    PENDING,
    STARTING,
    LostReplica,
    MessageRejectedError,
    NodeNotFoundError,
    RunNotFoundError,
    RunRecord,
    RunStatus,
    StateStats,
)
from superlink_async.state.common import BackendBase, NewRun
from superlink_async.wire.message_pb2 import Context, Message
from superlink_async.wire.recorddict_pb2 import ConfigRecord

_Proto = TypeVar("_Proto", bound=ProtoMessage)


def _copy(message: _Proto) -> _Proto:
    """A deep copy, so stored state and caller-held objects never alias."""
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


@dataclass
class _Node:
    online_until: float
    public_key: bytes | None = None


@dataclass
class _Exchange:
    """An instruction, whether its node has pulled it, and the node's reply once it came."""

    instruction: Message
    delivered: bool = False
    reply: Message | None = None


@dataclass
class _Tables:
    nodes: dict[int, _Node] = field(default_factory=dict)
    key_owners: dict[bytes, int] = field(default_factory=dict)
    known_keys: set[bytes] = field(default_factory=set)
    runs: dict[int, RunRecord] = field(default_factory=dict)  # in creation order
    contexts: dict[int, Context] = field(default_factory=dict)
    logs: dict[int, list[tuple[float, str]]] = field(default_factory=dict)
    exchanges: dict[str, _Exchange] = field(default_factory=dict)  # in storage order
    # Per node, the ids of its undelivered instructions in storage order (a dict as an
    # ordered set), so a pull costs what the node has waiting, not what everyone has.
    waiting: dict[int, dict[str, None]] = field(default_factory=dict)
    #: Pending runs reserved for a replica's next child: run id -> replica id.
    reserved: dict[int, str] = field(default_factory=dict)
    #: Replica leases: replica id -> when the lease lapses.
    leases: dict[str, float] = field(default_factory=dict)

    def forget(self, message_id: str) -> None:
        """Drop an exchange and its place in the waiting index."""
        exchange = self.exchanges.pop(message_id, None)
        if exchange is not None and not exchange.delivered:
            self.unwait(exchange.instruction.metadata.dst_node_id, message_id)

    def unwait(self, node_id: int, message_id: str) -> None:
        """Take an instruction out of its node's queue (delivered or gone)."""
        queue = self.waiting.get(node_id)
        if queue is not None:
            queue.pop(message_id, None)
            if not queue:
                del self.waiting[node_id]


class InMemoryLinkState(BackendBase):
    """``LinkState`` in this process's memory; everything is lost when it ends."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._data: _Tables | None = _Tables()

    @property
    def _tables(self) -> _Tables:
        if self._data is None:
            raise RuntimeError("The in-memory LinkState is closed")
        return self._data

    async def aclose(self) -> None:
        """Drop everything; later calls raise ``RuntimeError``."""
        self._data = None

    async def probe(self) -> None:
        """Memory has no disk to fill: serving while open."""
        _ = self._tables

    # --- Nodes ----------------------------------------------------------------------------
    async def create_node(self, ping_interval: float) -> int:
        """Register a node, online for ``ping_interval`` seconds (once, as the reference)."""
        return self._add_node(ping_interval, None)

    async def delete_node(self, node_id: int) -> None:
        """Forget a node and free its key; its messages stay."""
        if not self._remove_node(node_id):
            raise NodeNotFoundError(node_id)

    async def acknowledge_ping(self, node_id: int, ping_interval: float) -> bool:
        """Keep a node online for ``PING_PATIENCE`` ping intervals."""
        node = self._tables.nodes.get(node_id)
        if node is None:
            return False
        node.online_until = rules.online_until_after_ping(self._clock(), ping_interval)
        return True

    async def get_online_nodes(self) -> list[int]:
        """Nodes whose liveness has not lapsed, ascending."""
        now = self._clock()
        return sorted(
            node_id
            for node_id, node in self._tables.nodes.items()
            if rules.is_online(node.online_until, now)
        )

    async def node_exists(self, node_id: int) -> bool:
        """Whether the node is registered, online or not."""
        return node_id in self._tables.nodes

    # --- Node authentication --------------------------------------------------------------
    async def create_keyed_node(
        self, ping_interval: float, public_key: bytes
    ) -> tuple[int, int | None]:
        """Register a node bound to ``public_key``; an offline holder of the key goes."""
        tables = self._tables
        holder_id = tables.key_owners.get(public_key)
        holder = (
            None
            if holder_id is None
            else rules.KeyHolder(holder_id, tables.nodes[holder_id].online_until)
        )
        displaced = rules.displaced_key_holder(holder, self._clock())
        if displaced is not None:
            self._remove_node(displaced)
        return self._add_node(ping_interval, public_key), displaced

    async def get_node_id(self, public_key: bytes) -> int | None:
        """The node the key is bound to, if any."""
        return self._tables.key_owners.get(public_key)

    async def replace_known_public_keys(self, public_keys: Sequence[bytes]) -> None:
        """Make ``public_keys`` the whole allow-list."""
        self._tables.known_keys = set(public_keys)

    async def get_known_public_keys(self) -> set[bytes]:
        """A copy of the allow-list."""
        return set(self._tables.known_keys)

    # --- Runs -----------------------------------------------------------------------------
    async def _store_new_run(self, run: NewRun) -> int:
        """Store a pending run and its empty ServerApp context together, in one step."""
        tables = self._tables
        while (run_id := rules.new_run_id()) in tables.runs:
            pass
        tables.runs[run_id] = RunRecord(
            run_id=run_id,
            fab_id=run.fab_id,
            fab_version=run.fab_version,
            fab_hash=run.fab_hash,
            override_config=dict(run.override_config),
            pending_at=run.pending_at,
            federation_options=_copy(run.federation_options),
        )
        tables.contexts[run_id] = rules.context_at_creation(run_id)
        tables.logs[run_id] = []
        return run_id

    async def get_run(self, run_id: int) -> RunRecord | None:
        """One run, detached from storage."""
        record = self._tables.runs.get(run_id)
        return None if record is None else _export_run(record)

    async def get_runs(self) -> list[RunRecord]:
        """Every run by ``pending_at``, ties in creation order."""
        return [_export_run(record) for record in self._ordered_runs()]

    async def get_run_statuses(self, run_ids: Sequence[int]) -> dict[int, RunStatus]:
        """Statuses of the known runs among ``run_ids``."""
        runs = self._tables.runs
        return {run_id: runs[run_id].status for run_id in run_ids if run_id in runs}

    async def _transition_run(self, run_id: int, new_status: RunStatus) -> str | None:
        """Apply a valid transition; return why an invalid one is refused."""
        record = self._require_run(run_id)
        error = rules.transition_error(record.status, new_status)
        if error is None:
            self._advance(record, new_status)
        return error

    async def get_pending_run_id(self) -> int | None:
        """The oldest run whose status is pending (one stopped while pending is not)."""
        record = self._oldest_pending()
        return None if record is None else record.run_id

    async def reserve_pending_run(self, replica_id: str) -> int | None:
        """Reserve the oldest unreserved pending run for ``replica_id``."""
        reserved = self._tables.reserved
        record = next((record for record in self._pending() if record.run_id not in reserved), None)
        if record is None:
            return None
        reserved[record.run_id] = replica_id
        return record.run_id

    async def claim_pending_run(self, replica_id: str) -> RunRecord | None:
        """Start the run ``rules.claim_rank`` puts first, owned by ``replica_id``."""
        reserved = self._tables.reserved
        ranked = [
            (rank, position, record)
            for position, record in enumerate(self._pending())
            if (rank := rules.claim_rank(reserved.get(record.run_id, ""), replica_id)) is not None
        ]
        if not ranked:
            return None
        _, _, record = min(ranked, key=lambda entry: entry[:2])
        owned = dataclasses.replace(record, owner=replica_id)
        return _export_run(self._advance(owned, RunStatus(STARTING)))

    # --- Replicas -------------------------------------------------------------------------
    async def register_replica(
        self, replica_id: str, lease_seconds: float, details: str
    ) -> list[int]:
        """Take the lease; one process owns memory, so every other lease is stale and goes."""
        leases = self._tables.leases
        leases.clear()
        failed, _ = self._drop_orphans(lambda _: details)
        leases[replica_id] = rules.lease_until(self._clock(), lease_seconds)
        return rules.oldest_first(failed)

    async def renew_replica_lease(self, replica_id: str, lease_seconds: float) -> bool:
        """Extend a lease still held."""
        leases = self._tables.leases
        if replica_id not in leases:
            return False
        leases[replica_id] = rules.lease_until(self._clock(), lease_seconds)
        return True

    async def reap_lost_replicas(
        self, details: Callable[[str], str], *, reaper: str | None = None
    ) -> list[LostReplica]:
        """Drop the lapsed leases but the reaper's, then what no lease holds any more."""
        leases = self._tables.leases
        now = self._clock()
        dropped = [
            replica_id
            for replica_id, until in leases.items()
            if rules.reapable(replica_id, until, now, reaper)
        ]
        for replica_id in dropped:
            del leases[replica_id]
        return rules.lost_replicas(dropped, *self._drop_orphans(details))

    async def release_replica(self, replica_id: str, details: str) -> list[int]:
        """Drop the lease, fail the replica's runs and release its reservations at once."""
        self._tables.leases.pop(replica_id, None)
        failed, _ = self._drop_orphans(lambda _: details, only=replica_id)
        return rules.oldest_first(failed)

    async def get_replica_leases(self) -> dict[str, float]:
        """A copy of the leases."""
        return dict(self._tables.leases)

    async def get_federation_options(self, run_id: int) -> ConfigRecord | None:
        """A copy of the run's federation options."""
        record = self._tables.runs.get(run_id)
        return None if record is None else _copy(record.federation_options)

    # --- ServerApp context and logs -------------------------------------------------------
    async def set_serverapp_context(self, run_id: int, context: Context) -> None:
        """Replace the run's context with a copy of ``context``."""
        self._require_run(run_id)
        self._tables.contexts[run_id] = _copy(context)

    async def get_serverapp_context(self, run_id: int) -> Context | None:
        """A copy of the run's context."""
        context = self._tables.contexts.get(run_id)
        return None if context is None else _copy(context)

    async def add_serverapp_log(self, run_id: int, log_output: str) -> None:
        """Append a chunk; chunks with equal stamps are all kept, in order."""
        self._require_run(run_id)
        self._tables.logs[run_id].append((self._clock(), log_output))

    async def get_serverapp_log(self, run_id: int, after_timestamp: float) -> tuple[str, float]:
        """Chunks stamped after ``after_timestamp`` in time order, and the latest stamp."""
        self._require_run(run_id)
        entries = sorted(
            (entry for entry in self._tables.logs[run_id] if entry[0] > after_timestamp),
            key=lambda entry: entry[0],
        )
        latest = entries[-1][0] if entries else 0.0
        return "".join(text for _, text in entries), latest

    # --- Messages -------------------------------------------------------------------------
    async def store_messages_ins(
        self, messages: Sequence[Message]
    ) -> list[str | MessageRejectedError]:
        """Store a copy of each instruction for an existing run and node, in one step."""
        return [self._store_instruction(message) for message in messages]

    async def store_message_res(self, message: Message) -> str:
        """Store a copy of the first valid reply to a live instruction."""
        exchange = self._tables.exchanges.get(message.metadata.reply_to_message_id)
        rejection = rules.reply_rejection(
            None if exchange is None else exchange.instruction.metadata,
            exchange is not None and exchange.reply is not None,
            message.metadata,
            self._clock(),
        )
        if rejection is not None:
            raise rejection
        assert exchange is not None  # an unknown instruction is a rejection
        stored = _copy(message)
        stored.metadata.message_id = rules.new_message_id()
        exchange.reply = stored
        return stored.metadata.message_id

    async def has_instructions_waiting(self, node_id: int) -> bool:
        """Whether the node has undelivered instructions (expired ones included)."""
        return bool(self._tables.waiting.get(node_id))

    async def pull_message_ins(self, node_id: int, limit: int = 1) -> list[Message]:
        """Hand out and mark delivered, in one step, a node's oldest waiting instructions."""
        now = self._clock()
        tables = self._tables
        pulled: list[Message] = []
        for message_id in list(tables.waiting.get(node_id, ())):
            if len(pulled) >= limit:
                break
            exchange = tables.exchanges[message_id]
            if rules.is_expired(exchange.instruction.metadata, now):
                continue
            tables.unwait(node_id, message_id)
            exchange.delivered = True
            pulled.append(_copy(exchange.instruction))
        return pulled

    async def take_replies(self, run_id: int, message_ids: Sequence[str]) -> list[Message]:
        """Results for the ids (each once), deleting every exchange that produced one.

        The run check comes first, so that a mismatch loses nothing.
        """
        exchanges = self._tables.exchanges
        wanted = list(dict.fromkeys(message_ids))
        mismatch = rules.run_mismatch(
            run_id,
            (exchanges[i].instruction.metadata for i in wanted if i in exchanges),
        )
        if mismatch is not None:
            raise mismatch
        now = self._clock()
        results: list[Message] = []
        for message_id in wanted:
            result = self._result_for(message_id, now)
            if result is not None:
                self._tables.forget(message_id)
                results.append(result)
        return results

    async def delete_run_messages(self, run_id: int) -> int:
        """Delete a run's instructions and their replies; count the instructions."""
        exchanges = self._tables.exchanges
        doomed = [
            message_id
            for message_id, exchange in exchanges.items()
            if exchange.instruction.metadata.run_id == run_id
        ]
        for message_id in doomed:
            self._tables.forget(message_id)
        return len(doomed)

    async def get_stats(self) -> StateStats:
        """Node and message counts, for metrics."""
        now = self._clock()
        tables = self._tables
        exchanges = tables.exchanges.values()
        return StateStats(
            nodes_registered=len(tables.nodes),
            nodes_online=sum(
                rules.is_online(node.online_until, now) for node in tables.nodes.values()
            ),
            instructions_waiting=sum(not exchange.delivered for exchange in exchanges),
            instructions_delivered=sum(exchange.delivered for exchange in exchanges),
            replies_stored=sum(exchange.reply is not None for exchange in exchanges),
            messages_expired=sum(
                rules.is_expired(exchange.instruction.metadata, now) for exchange in exchanges
            ),
        )

    async def purge_expired_messages(self) -> int:
        """Delete expired instructions (with their replies) and expired replies; count both."""
        now = self._clock()
        exchanges = self._tables.exchanges
        removed = 0
        for message_id, exchange in list(exchanges.items()):
            if rules.is_expired(exchange.instruction.metadata, now):
                self._tables.forget(message_id)
                removed += 1 if exchange.reply is None else 2
            elif exchange.reply is not None and rules.is_expired(exchange.reply.metadata, now):
                exchange.reply = None
                removed += 1
        return removed

    # --- Helpers --------------------------------------------------------------------------
    def _add_node(self, ping_interval: float, public_key: bytes | None) -> int:
        tables = self._tables
        while (node_id := rules.new_node_id()) in tables.nodes:
            pass
        online_until = rules.online_until_on_creation(self._clock(), ping_interval)
        tables.nodes[node_id] = _Node(online_until, public_key)
        if public_key is not None:
            tables.key_owners[public_key] = node_id
        return node_id

    def _remove_node(self, node_id: int) -> bool:
        """Forget a node and free its key; False if there was no such node."""
        tables = self._tables
        node = tables.nodes.pop(node_id, None)
        if node is None:
            return False
        if node.public_key is not None:
            del tables.key_owners[node.public_key]
        return True

    def _store_instruction(self, message: Message) -> str | MessageRejectedError:
        """Store a copy of an instruction under a fresh id, or say why it is refused."""
        tables = self._tables
        metadata = message.metadata
        rejection = rules.instruction_rejection(
            metadata, metadata.run_id in tables.runs, metadata.dst_node_id in tables.nodes
        )
        if rejection is not None:
            return rejection
        stored = _copy(message)
        message_id = stored.metadata.message_id = rules.new_message_id()
        tables.exchanges[message_id] = _Exchange(stored)
        tables.waiting.setdefault(metadata.dst_node_id, {})[message_id] = None
        return message_id

    def _require_run(self, run_id: int) -> RunRecord:
        record = self._tables.runs.get(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        return record

    def _ordered_runs(self) -> list[RunRecord]:
        # ISO strings of one offset sort chronologically; the stable sort keeps creation order.
        return sorted(self._tables.runs.values(), key=lambda record: record.pending_at)

    def _pending(self) -> list[RunRecord]:
        """Pending runs, oldest first."""
        return [record for record in self._ordered_runs() if record.status.status == PENDING]

    def _oldest_pending(self) -> RunRecord | None:
        return next(iter(self._pending()), None)

    def _advance(self, record: RunRecord, status: RunStatus) -> RunRecord:
        """Store ``record`` in ``status``, stamping the time the status was entered.

        A run leaving ``pending`` leaves its reservation behind: only pending runs have one.
        """
        stamp: dict[str, Any] = {
            rules.timestamp_field_for(status.status): rules.iso_timestamp(self._clock())
        }
        updated = dataclasses.replace(record, status=status, **stamp)
        self._tables.runs[record.run_id] = updated
        self._tables.reserved.pop(record.run_id, None)
        return updated

    def _drop_orphans(
        self, details: Callable[[str], str], only: str | None = None
    ) -> tuple[list[rules.HeldRun], list[rules.HeldRun]]:
        """Fail the held runs and release the reservations of replicas holding no lease.

        With ``only``, just those of that replica. Returns (failed, released).
        """
        tables = self._tables

        def orphaned(holder: str) -> bool:
            return holder == only if only is not None else holder not in tables.leases

        failed: list[rules.HeldRun] = []
        released: list[rules.HeldRun] = []
        for position, record in enumerate(self._ordered_runs()):
            order = (record.pending_at, position)
            holder = tables.reserved.get(record.run_id)
            if holder is not None and orphaned(holder):
                del tables.reserved[record.run_id]
                released.append(rules.HeldRun(record.run_id, holder, order))
            if record.status.status in rules.HELD_STATUSES and orphaned(record.owner):
                failed.append(rules.HeldRun(record.run_id, record.owner, order))
        texts = rules.details_by_holder(failed, details)
        for run in failed:
            self._advance(tables.runs[run.run_id], rules.lost_run_status(texts[run.run_id]))
        return failed, released

    def _result_for(self, message_id: str, now: float) -> Message | None:
        """The reply or synthetic error ``take_replies`` owes for one id; None while waiting."""
        exchange = self._tables.exchanges.get(message_id)
        if exchange is None:
            return rules.result_for(message_id, None, None, None, now)
        node = self._tables.nodes.get(exchange.instruction.metadata.dst_node_id)
        online_until = None if node is None else node.online_until
        return rules.result_for(message_id, exchange.instruction, exchange.reply, online_until, now)


def _export_run(record: RunRecord) -> RunRecord:
    """A run record sharing no mutable parts with storage."""
    return dataclasses.replace(
        record,
        override_config=dict(record.override_config),
        federation_options=_copy(record.federation_options),
    )
