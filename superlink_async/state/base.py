"""The state protocol every backend implements, and the records it trades in.

Messages and contexts travel as their wire types (``Message``, ``Context``, ``ConfigRecord``):
the SuperLink never inspects their content, so converting them into another model would
only cost time. Runs get a small record of their own because their status machine is ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from superlink_async.wire.message_pb2 import Context, Message
from superlink_async.wire.recorddict_pb2 import ConfigRecord

# Run statuses and finished sub-statuses, exactly the strings flwr 1.18.0 puts on the wire.
PENDING = "pending"
STARTING = "starting"
RUNNING = "running"
FINISHED = "finished"
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"

#: The SuperLink's own node id: instructions come from it, replies go to it.
SUPERLINK_NODE_ID = 1

#: A user config value (``override_config``), as flwr's ``Scalar`` carries it.
ScalarValue = bool | int | float | str | bytes
UserConfig = dict[str, ScalarValue]


@dataclass(frozen=True)
class RunStatus:
    """Where a run is in its life: ``status``, plus ``sub_status`` once finished."""

    status: str
    sub_status: str = ""
    details: str = ""


@dataclass(frozen=True)
class RunRecord:
    """A stored run. Timestamps are ISO-8601 with ``+00:00``; ``""`` means not reached."""

    run_id: int
    fab_id: str
    fab_version: str
    fab_hash: str
    override_config: UserConfig
    pending_at: str
    starting_at: str = ""
    running_at: str = ""
    finished_at: str = ""
    status: RunStatus = RunStatus(PENDING)
    federation_options: ConfigRecord = field(default_factory=ConfigRecord)
    #: The replica that claimed the run (``claim_pending_run``); ``""`` while pending.
    owner: str = ""


@dataclass(frozen=True)
class LostReplica:
    """What reaping one replica whose lease lapsed did to the runs it held."""

    replica_id: str
    #: Its ``starting``/``running`` runs, now ``finished:failed``, oldest first.
    failed_runs: list[int]
    #: Pending runs it had reserved for a child, back in the queue, oldest first.
    released_runs: list[int]


@dataclass(frozen=True)
class StateStats:
    """Counts for monitoring: taken in one step, so they agree with each other."""

    nodes_registered: int
    nodes_online: int
    instructions_waiting: int
    instructions_delivered: int
    replies_stored: int
    messages_expired: int


@dataclass(frozen=True)
class PoolUsage:
    """How a store's database connections are used: for metrics, read without a round trip.

    ``waited_seconds`` over ``acquisitions`` is the mean time a call waited for its
    connection; when it grows, calls queue for the pool, not for the database.
    """

    max_size: int
    open: int
    busy: int
    acquisitions: int
    waited_seconds: float


class StateError(Exception):
    """Base of every error a backend raises on purpose; its text is safe to show a client."""


class RunNotFoundError(StateError):
    """The run id is unknown."""

    def __init__(self, run_id: int) -> None:
        super().__init__(f"Run {run_id} not found")
        self.run_id = run_id


class NodeNotFoundError(StateError):
    """The node id is unknown."""

    def __init__(self, node_id: int) -> None:
        super().__init__(f"Node {node_id} not found")
        self.node_id = node_id


class PublicKeyInUseError(StateError):
    """The public key is already bound to another (online) node."""

    def __init__(self) -> None:
        super().__init__("Public key already in use")


class MessageRejectedError(StateError):
    """A message cannot be stored; the text says why (it matches the reference's log line)."""


class RunMismatchError(StateError):
    """A ServerApp asked for replies to instructions of another run."""


class SchemaVersionError(StateError):
    """A database file was written by an incompatible schema version."""


class StorageFullError(StateError):
    """The database cannot take a write: its disk (or its size limit) is full.

    Reads still work; writes work again once space returns. Clients are told to retry.
    """

    def __init__(self) -> None:
        super().__init__("database or disk is full")


class StateUnavailableError(StateError):
    """The store cannot be reached right now (e.g. its database server is down or restarting).

    The operation was not confirmed (its transaction rolled back, unless the connection was
    lost during the commit itself); the same call may succeed later, so clients are told to
    retry.
    """


class DatabaseCorruptError(StateError):
    """A database file fails SQLite's integrity check; it must be restored, not served."""


class LinkState(Protocol):
    """Everything the SuperLink remembers. Each method is atomic with respect to the others.

    Time comes from the backend's clock (float Unix seconds), so tests can move it.
    """

    async def aclose(self) -> None:
        """Flush and release the backend; the object is unusable afterwards."""

    async def probe(self) -> None:
        """Raise unless the store serves: it reads, and writes too if one failed lately.

        ``StorageFullError`` while a full disk still refuses writes.
        """

    # --- Nodes ----------------------------------------------------------------------------
    async def create_node(self, ping_interval: float) -> int:
        """Register a node, online for ``ping_interval`` seconds; return its id (not 0 or 1)."""

    async def delete_node(self, node_id: int) -> None:
        """Forget a node and its key binding; its messages stay. ``NodeNotFoundError``."""

    async def acknowledge_ping(self, node_id: int, ping_interval: float) -> bool:
        """Keep a node online for ``2 * ping_interval`` more seconds; False if it is unknown."""

    async def get_online_nodes(self) -> list[int]:
        """Ids of the nodes whose liveness has not lapsed, in ascending order."""

    async def node_exists(self, node_id: int) -> bool:
        """Whether the node id is registered (online or not)."""

    # --- Node authentication --------------------------------------------------------------
    async def create_keyed_node(
        self, ping_interval: float, public_key: bytes
    ) -> tuple[int, int | None]:
        """Register a node bound to ``public_key``, in one step: (its id, the node replaced).

        Creating and binding are one transaction, so no node is ever left without its key.
        A key held by an offline node moves, and that node is deleted (its id is returned),
        so a SuperNode that died without DeleteNode can rejoin with its fixed key (the
        reference refused it forever). ``PublicKeyInUseError``, and no new node, while the
        holder is online.
        """

    async def get_node_id(self, public_key: bytes) -> int | None:
        """The node a key is bound to, if any."""

    async def is_key_bound(self, public_key: bytes, node_id: int) -> bool:
        """Whether ``public_key`` is bound to ``node_id``: the check of every signed Fleet call.

        On PostgreSQL a binding read once is answered from memory while the backend hears
        every node deletion (``listen``), and read again otherwise.
        """

    async def replace_known_public_keys(self, public_keys: Sequence[bytes]) -> None:
        """Make ``public_keys`` the complete list of keys allowed to authenticate."""

    async def get_known_public_keys(self) -> set[bytes]:
        """The keys allowed to authenticate."""

    # --- Runs -----------------------------------------------------------------------------
    async def create_run(
        self,
        fab_id: str,
        fab_version: str,
        fab_hash: str,
        override_config: UserConfig,
        federation_options: ConfigRecord,
    ) -> int:
        """Store a pending run together with its initial ServerApp context, in one step.

        The context is ``Context(run_id, node_id=0)`` with empty configs and state, so every
        run can be started (the reference leaves runs created over ServerAppIo unstartable).
        """

    async def get_run(self, run_id: int) -> RunRecord | None:
        """One run, or None."""

    async def get_runs(self) -> list[RunRecord]:
        """Every run, oldest first (by ``pending_at``)."""

    async def get_run_statuses(self, run_ids: Sequence[int]) -> dict[int, RunStatus]:
        """Statuses of the known runs among ``run_ids``; unknown ids are left out."""

    async def update_run_status(self, run_id: int, new_status: RunStatus) -> bool:
        """Apply a valid transition (``rules``) and stamp its time. ``RunNotFoundError``."""

    async def get_pending_run_id(self) -> int | None:
        """The oldest pending run, if any."""

    async def reserve_pending_run(self, replica_id: str) -> int | None:
        """Reserve the oldest pending run nobody has reserved, for ``replica_id``'s next child.

        The run stays ``pending`` (what the CLI shows does not change); only a claim through
        the same replica can take it. Two replicas racing never reserve the same run. A
        reservation ends when the run leaves ``pending`` (claimed, or stopped) and when its
        replica registers again, is reaped or is released (the run goes back to the queue).
        """

    async def claim_pending_run(self, replica_id: str) -> RunRecord | None:
        """Move a pending run to ``starting``, owned by ``replica_id``, and return it as it is now.

        The oldest run reserved by ``replica_id`` if there is one, else the oldest run nobody
        reserved. Two claims racing (on any replicas) never take the same run.
        """

    # --- Replicas (processes sharing this state) ------------------------------------------
    async def register_replica(
        self, replica_id: str, lease_seconds: float, details: str
    ) -> list[int]:
        """Take (or take back) ``replica_id``'s lease until now + ``lease_seconds``, at startup.

        Runs left ``starting``/``running`` by an earlier process with this id, or owned by no
        leaseholder at all, cannot go on: they finish as ``failed`` with ``details`` and are
        returned, oldest first; pending runs reserved by them go back to the queue. A backend
        only one process can open (memory, SQLite) treats every other lease as stale. Leases
        run on the backend's clock: replicas on several machines need synchronised clocks.
        """

    async def renew_replica_lease(self, replica_id: str, lease_seconds: float) -> bool:
        """Extend the lease to now + ``lease_seconds``; False if it was lost (reaped) meanwhile.

        A lost lease is not renewed: the caller re-registers (its runs are finished already).
        """

    async def reap_lost_replicas(
        self, details: Callable[[str], str], *, reaper: str | None = None
    ) -> list[LostReplica]:
        """Drop every lease that lapsed, finish its runs as ``failed`` and release its reservations.

        ``details(replica_id)`` is the text the failed runs get. Each lapsed lease is reaped
        by exactly one caller, however many replicas reap at once. Runs and reservations of
        replicas holding no lease (one whose claim raced its own reaping) go the same way,
        under their holder's name. One entry per replica, by replica id; a lapsed replica
        that held nothing has empty lists. The ``reaper``'s own lease is never dropped: a
        replica that reaps is alive, and a renewal held up behind a busy state must not fail
        its own runs (another replica may still reap it).
        """

    async def release_replica(self, replica_id: str, details: str) -> list[int]:
        """Graceful hand-over at shutdown: like reaping ``replica_id`` now, without the wait.

        Drops its lease (if held), finishes its ``starting``/``running`` runs as ``failed``
        with ``details`` and returns them oldest first; its reservations go back to the queue.
        """

    async def get_replica_leases(self) -> dict[str, float]:
        """Every lease held: replica id to the Unix time it lapses."""

    async def listen(self, on_change: Callable[[], None]) -> None:
        """Until cancelled, call ``on_change`` whenever another process changes a run or a log.

        A backend only one process can open has nothing to hear and just waits. Dropped
        notifications are allowed (waiters poll too), a failing connection is retried.
        Extra calls are allowed too: for this process's own changes, and once each time
        listening (re)starts, for what changed while nobody listened. ``on_change`` runs on
        the event loop and must not block.
        """

    async def get_federation_options(self, run_id: int) -> ConfigRecord | None:
        """The run's federation options, or None for an unknown run."""

    # --- ServerApp context and logs -------------------------------------------------------
    async def set_serverapp_context(self, run_id: int, context: Context) -> None:
        """Replace the run's ServerApp context. ``RunNotFoundError``."""

    async def get_serverapp_context(self, run_id: int) -> Context | None:
        """The run's ServerApp context, or None."""

    async def add_serverapp_log(self, run_id: int, log_output: str) -> None:
        """Append a chunk of ServerApp output, stamped with the clock. ``RunNotFoundError``."""

    async def get_serverapp_log(self, run_id: int, after_timestamp: float) -> tuple[str, float]:
        """Chunks stamped after ``after_timestamp``, joined, and the latest stamp (0.0 if none).

        ``RunNotFoundError``.
        """

    # --- Messages -------------------------------------------------------------------------
    async def store_message_ins(self, message: Message) -> str:
        """Store an instruction (already validated); assign and return its id.

        ``MessageRejectedError`` if its run or destination node is unknown.
        """

    async def store_messages_ins(
        self, messages: Sequence[Message]
    ) -> list[str | MessageRejectedError]:
        """``store_message_ins`` for each, as one operation: each id, or why it was refused.

        A ServerApp pushes a round's instructions at once; one operation instead of one per
        instruction keeps the push from queueing behind the fleet's calls a thousand times.
        """

    async def store_message_res(self, message: Message) -> str:
        """Store a node's reply (already validated); assign and return its id.

        ``MessageRejectedError`` if the instruction is unknown or expired, was sent to another
        node or run, already has a reply, or the reply's TTL outlives the instruction's.
        """

    async def has_instructions_waiting(self, node_id: int) -> bool:
        """Whether an instruction may be waiting for ``node_id``, answered cheaply.

        From memory where one process owns the data (memory, SQLite); one indexed read on
        PostgreSQL, which other processes write to.

        Never False while one is waiting; may be True for one that expired meanwhile, or
        until a pull finds nothing.
        """

    async def is_idle_node(self, public_key: bytes, node_id: int) -> bool:
        """Whether ``public_key`` is bound to ``node_id`` and nothing may wait for that node.

        The question an idle poll asks before it is answered early; one database read on
        PostgreSQL instead of ``get_node_id`` and ``has_instructions_waiting`` one by one.
        """

    async def pull_message_ins(self, node_id: int, limit: int = 1) -> list[Message]:
        """Hand out up to ``limit`` undelivered, unexpired instructions for a node, oldest first.

        Each is marked delivered in the same step, so no instruction is handed out twice.
        """

    async def take_replies(self, run_id: int, message_ids: Sequence[str]) -> list[Message]:
        """Replies for the given instruction ids of ``run_id``, then forget those exchanges.

        Ids with no reply yet (and a live destination) are skipped. Missing or expired
        instructions, offline or deleted destinations and expired replies produce synthetic
        error replies (``rules``). Every instruction and reply returned is deleted. Raises
        ``RunMismatchError`` (and changes nothing) if an id belongs to another run.
        """

    async def delete_run_messages(self, run_id: int) -> int:
        """Delete all instructions of a run and their replies; return how many instructions."""

    async def get_stats(self) -> StateStats:
        """Node and message counts, for metrics."""

    @property
    def connection_pool(self) -> PoolUsage | None:
        """How the pool of database connections is used; None for a store without one."""

    async def purge_expired_messages(self) -> int:
        """Delete instructions and replies whose TTL has lapsed; return how many rows went."""
