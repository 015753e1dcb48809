"""Node authentication (1.18 scheme) on the gRPC Fleet API, with real keys and signatures."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from grpclib import GRPCError, Status
from grpclib.testing import ChannelFor

from superlink_async.loop_lag import LoopLag
from superlink_async.runtime.signature_workers import WorkerSignatures
from superlink_async.services.errors import ServiceError
from superlink_async.services.fleet import FleetService
from superlink_async.services.node_auth import NodeAuthenticator
from superlink_async.services.signatures import InlineSignatures, SignatureChecker
from superlink_async.state.base import LinkState
from superlink_async.transports.gate import Admission, CallGate
from superlink_async.transports.grpc.servicers import FleetServicer
from superlink_async.wire import fab_pb2, fleet_grpc, fleet_pb2, run_pb2, serverappio_pb2
from superlink_async.wire.message_pb2 import Message, Metadata
from superlink_async.wire.node_pb2 import Node
from tests.node_keys import NodeKey
from tests.services.conftest import Link, open_link

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["on the loop", "in a worker process"])
async def signatures(request: pytest.FixtureRequest) -> AsyncIterator[SignatureChecker]:
    """Every rule below holds wherever the signatures are checked."""
    if request.param == "on the loop":
        yield InlineSignatures()
        return
    workers = WorkerSignatures(1, LoopLag(), spill_lag=0)  # every check in the worker
    async with anyio.create_task_group() as tasks:
        await tasks.start(workers.run)
        yield workers
        tasks.cancel_scope.cancel()


async def fleet_with(
    link: Link, known: list[bytes] | None, signatures: SignatureChecker
) -> AsyncIterator[fleet_grpc.FleetStub]:
    auth = NodeAuthenticator(link.state, known, clock=link.clock, signatures=signatures)
    servicer = FleetServicer(
        FleetService(link.state, link.fabs, clock=link.clock), CallGate(), auth
    )
    async with ChannelFor([servicer]) as channel:
        yield fleet_grpc.FleetStub(channel)


@pytest.fixture
async def auto_fleet(
    link: Link, signatures: SignatureChecker
) -> AsyncIterator[fleet_grpc.FleetStub]:
    async for stub in fleet_with(link, None, signatures):
        yield stub


KNOWN = NodeKey()


@pytest.fixture
async def listed_fleet(
    link: Link, signatures: SignatureChecker
) -> AsyncIterator[fleet_grpc.FleetStub]:
    async for stub in fleet_with(link, [KNOWN.pem], signatures):
        yield stub


async def create_node(stub: fleet_grpc.FleetStub, key: NodeKey, link: Link) -> int:
    response = await stub.CreateNode(
        fleet_pb2.CreateNodeRequest(ping_interval=30), metadata=key.metadata(link.clock.now)
    )
    return response.node.node_id


async def assert_unauthenticated(call: object, message: str) -> None:
    with pytest.raises(GRPCError) as error:
        await call  # type: ignore[misc]
    assert (error.value.status, error.value.message) == (Status.UNAUTHENTICATED, message)


async def test_automatic_mode_binds_the_key_and_accepts_its_node(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    key = NodeKey()
    node_id = await create_node(auto_fleet, key, link)
    assert await link.state.get_node_id(key.pem) == node_id
    ping = fleet_pb2.PingRequest(node=Node(node_id=node_id), ping_interval=30)
    assert (await auto_fleet.Ping(ping, metadata=key.metadata(link.clock.now))).success


async def test_missing_metadata_is_rejected(auto_fleet: fleet_grpc.FleetStub) -> None:
    await assert_unauthenticated(
        auto_fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0)),
        "Missing authentication metadata",
    )


async def test_an_unlisted_key_is_not_recognized(
    listed_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    await assert_unauthenticated(
        create_node(listed_fleet, NodeKey(), link), "Public key not recognized"
    )
    assert await link.state.get_online_nodes() == []
    assert await create_node(listed_fleet, KNOWN, link) > 1


async def test_a_signature_by_another_key_is_invalid(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    metadata = NodeKey().metadata(link.clock.now)
    metadata["flwr-public-key-bin"] = NodeKey().pem
    await assert_unauthenticated(
        auto_fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0), metadata=metadata),
        "Invalid signature",
    )


@pytest.mark.parametrize("skew", [-15.5, -20.0, 5.5, 30.0])
async def test_timestamps_outside_the_window_are_rejected(
    auto_fleet: fleet_grpc.FleetStub, link: Link, skew: float
) -> None:
    metadata = NodeKey().metadata(link.clock.now, skew=skew)
    await assert_unauthenticated(
        auto_fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0), metadata=metadata),
        "Invalid timestamp",
    )


@pytest.mark.parametrize("skew", [-14.0, 4.0])
async def test_timestamps_inside_the_window_are_accepted(
    auto_fleet: fleet_grpc.FleetStub, link: Link, skew: float
) -> None:
    key = NodeKey()
    metadata = key.metadata(link.clock.now, skew=skew)
    response = await auto_fleet.CreateNode(
        fleet_pb2.CreateNodeRequest(ping_interval=30.0), metadata=metadata
    )
    assert response.node.node_id > 0
    assert await link.state.get_node_id(key.pem) == response.node.node_id


@pytest.mark.parametrize(
    "timestamp", ["2026-01-01T00:00:00", "yesterday", "2026-13-45T99:00:00+00:00"]
)
async def test_naive_or_garbage_timestamps_are_rejected_not_crashed_on(
    auto_fleet: fleet_grpc.FleetStub, link: Link, timestamp: str
) -> None:
    """The reference answered a naive timestamp with UNKNOWN (a crash in its interceptor)."""
    metadata = NodeKey().metadata(link.clock.now, timestamp=timestamp)
    await assert_unauthenticated(
        auto_fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0), metadata=metadata),
        "Invalid timestamp",
    )


async def caller_and_other(stub: fleet_grpc.FleetStub, link: Link) -> tuple[NodeKey, int, int]:
    """A caller's key and node, and the node of someone else."""
    key = NodeKey()
    return key, await create_node(stub, key, link), await create_node(stub, NodeKey(), link)


async def test_calls_must_name_a_node_their_key_is_bound_to(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    key = NodeKey()
    node_id = await create_node(auto_fleet, key, link)
    await assert_unauthenticated(
        auto_fleet.PullMessages(
            fleet_pb2.PullMessagesRequest(), metadata=key.metadata(link.clock.now)
        ),
        "Invalid node ID",
    )
    unbound = NodeKey()
    request = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
    await assert_unauthenticated(
        auto_fleet.PullMessages(request, metadata=unbound.metadata(link.clock.now)),
        "Invalid node ID",
    )


def requests_naming(node_id: int) -> dict[str, object]:
    """One request per Fleet method but CreateNode, each naming ``node_id`` as the caller."""
    node = Node(node_id=node_id)
    return {
        "DeleteNode": fleet_pb2.DeleteNodeRequest(node=node),
        "Ping": fleet_pb2.PingRequest(node=node, ping_interval=30),
        "PullMessages": fleet_pb2.PullMessagesRequest(node=node),
        "PushMessages": fleet_pb2.PushMessagesRequest(
            node=node, messages_list=[Message(metadata=Metadata(src_node_id=node_id))]
        ),
        "GetRun": run_pb2.GetRunRequest(node=node, run_id=1),
        "GetFab": fab_pb2.GetFabRequest(node=node, hash_str="0" * 64, run_id=1),
    }


@pytest.mark.parametrize("method", list(requests_naming(0)))
async def test_every_method_must_name_the_callers_own_node(
    auto_fleet: fleet_grpc.FleetStub, link: Link, method: str
) -> None:
    """Accepted past authentication for its own node (the service may still refuse it)."""
    key, node_id, other = await caller_and_other(auto_fleet, link)
    call = getattr(auto_fleet, method)
    await assert_unauthenticated(
        call(requests_naming(other)[method], metadata=key.metadata(link.clock.now)),
        "Invalid node ID",
    )
    try:
        await call(requests_naming(node_id)[method], metadata=key.metadata(link.clock.now))
    except GRPCError as error:
        assert error.status != Status.UNAUTHENTICATED


async def test_replies_in_another_nodes_name_are_refused(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    """The reference let a node push replies as any other node; only its own pass here."""
    key, node_id, other = await caller_and_other(auto_fleet, link)
    request = fleet_pb2.PushMessagesRequest(
        node=Node(node_id=node_id),
        messages_list=[Message(metadata=Metadata(src_node_id=other))],
    )
    await assert_unauthenticated(
        auto_fleet.PushMessages(request, metadata=key.metadata(link.clock.now)),
        "Invalid node ID",
    )


async def test_delete_node_frees_the_key_for_a_new_node(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    key = NodeKey()
    old = await create_node(auto_fleet, key, link)
    await auto_fleet.DeleteNode(
        fleet_pb2.DeleteNodeRequest(node=Node(node_id=old)), metadata=key.metadata(link.clock.now)
    )
    new = await create_node(auto_fleet, key, link)
    assert await link.state.get_node_id(key.pem) == new


async def test_a_key_in_use_by_an_online_node_is_refused(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    key = NodeKey()
    first = await create_node(auto_fleet, key, link)
    await assert_unauthenticated(create_node(auto_fleet, key, link), "Public key already in use")
    assert await link.state.get_online_nodes() == [first]


async def test_a_fixed_key_node_rejoins_once_its_old_node_is_offline(
    auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    """The reference refused such a node forever ("Public key already in use")."""
    key = NodeKey()
    old = await create_node(auto_fleet, key, link)
    link.clock.now += 31
    new = await create_node(auto_fleet, key, link)
    assert new != old
    assert not await link.state.node_exists(old)
    assert await link.state.get_node_id(key.pem) == new


#: SQLite refuses every write that would give a node its key, or remove a node, as a
#: failing disk refused them: creating a bare node still works.
_FAILING_KEY_WRITES = (
    "CREATE TRIGGER keyed_insert BEFORE INSERT ON node WHEN NEW.public_key IS NOT NULL "
    "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    "CREATE TRIGGER key_update BEFORE UPDATE OF public_key ON node "
    "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
    "CREATE TRIGGER node_delete BEFORE DELETE ON node "
    "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END",
)


async def test_a_create_node_whose_key_cannot_be_stored_leaves_no_node(
    tmp_path: Path, signatures: SignatureChecker
) -> None:
    """Create and bind are one transaction: the reference (and we, before) left a keyless node."""
    database = tmp_path / "state.db"
    async with open_link(str(database), tmp_path) as link:
        with sqlite3.connect(database) as other:
            for statement in _FAILING_KEY_WRITES:
                other.execute(statement)
        async for stub in fleet_with(link, None, signatures):
            with pytest.raises(GRPCError):
                await create_node(stub, NodeKey(), link)
        assert (await link.state.get_stats()).nodes_registered == 0


def forged(key: NodeKey, link: Link) -> dict[str, str | bytes]:
    """``key``'s metadata with a signature that does not verify."""
    metadata = key.metadata(link.clock.now)
    metadata["flwr-signature-bin"] = b"not a signature"
    return metadata


@pytest.fixture
async def late_fleet(link: Link) -> AsyncIterator[fleet_grpc.FleetStub]:
    """A Fleet API whose event loop measured 200 ms of lag (the bound is 50 ms)."""
    lag = LoopLag()
    lag.level = 0.2
    auth = NodeAuthenticator(link.state, None, clock=link.clock)
    gate = CallGate(lag=lag, admission=Admission(max_lag=0.05))
    servicer = FleetServicer(FleetService(link.state, link.fabs, clock=link.clock), gate, auth)
    async with ChannelFor([servicer]) as channel:
        yield fleet_grpc.FleetStub(channel)


async def test_an_idle_poll_is_answered_before_its_signature_check_while_the_loop_is_late(
    late_fleet: fleet_grpc.FleetStub, auto_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    """The answer, nothing waiting, is what anyone may learn; the check would cost most."""
    key = NodeKey()
    node_id = await create_node(late_fleet, key, link)
    poll = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
    answered = await late_fleet.PullMessages(poll, metadata=forged(key, link))
    assert list(answered.messages_list) == []
    await assert_unauthenticated(
        auto_fleet.PullMessages(poll, metadata=forged(key, link)), "Invalid signature"
    )


async def test_a_poll_with_an_instruction_waiting_is_verified_even_while_the_loop_is_late(
    late_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    key = NodeKey()
    node_id = await create_node(late_fleet, key, link)
    run_id = await link.running_run()
    await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(
            messages_list=[link.instruction(run_id, node_id)], run_id=run_id
        )
    )
    poll = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
    await assert_unauthenticated(
        late_fleet.PullMessages(poll, metadata=forged(key, link)), "Invalid signature"
    )
    pulled = await late_fleet.PullMessages(poll, metadata=key.metadata(link.clock.now))
    assert [message.metadata.dst_node_id for message in pulled.messages_list] == [node_id]


async def test_a_poll_in_another_nodes_name_is_never_answered_early(
    late_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    mine, theirs = NodeKey(), NodeKey()
    await create_node(late_fleet, mine, link)
    their_node = await create_node(late_fleet, theirs, link)
    poll = fleet_pb2.PullMessagesRequest(node=Node(node_id=their_node))
    await assert_unauthenticated(
        late_fleet.PullMessages(poll, metadata=mine.metadata(link.clock.now)), "Invalid node ID"
    )
    unknown = fleet_pb2.PullMessagesRequest(node=Node(node_id=their_node + 1))
    await assert_unauthenticated(
        late_fleet.PullMessages(unknown, metadata=forged(NodeKey(), link)), "Invalid signature"
    )


class SlowLookups:
    """The link's state, but every ``is_idle_node`` takes 20 s of clock time.

    That is what a node sees when its poll queues behind a thousand others at a busy state
    store: the lookup an early answer needs is slow.
    """

    def __init__(self, link: Link) -> None:
        self._link = link

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link.state, name)

    async def is_idle_node(self, public_key: bytes, node_id: int) -> bool:
        self._link.clock.now += 20.0
        return bool(await self._link.state.is_idle_node(public_key, node_id))


async def test_a_timestamp_is_judged_when_the_call_arrived_not_after_our_own_queues(
    link: Link,
) -> None:
    """A signed poll that was fresh on arrival is served, however long we took to reach it.

    Refusing it ("Invalid timestamp", UNAUTHENTICATED) would end the 1.18 SuperNode that
    sent it: at the edge of capacity, the server's slowness used to cost nodes their lives.
    """
    lag = LoopLag()
    lag.level = 0.2  # behind: the poll first goes through the (slow) early-answer lookup
    state = cast(LinkState, SlowLookups(link))
    auth = NodeAuthenticator(state, None, clock=link.clock)
    gate = CallGate(lag=lag, admission=Admission(max_lag=0.05))
    servicer = FleetServicer(FleetService(link.state, link.fabs, clock=link.clock), gate, auth)
    async with ChannelFor([servicer]) as channel:
        fleet = fleet_grpc.FleetStub(channel)
        key = NodeKey()
        node_id = await create_node(fleet, key, link)
        run_id = await link.running_run()
        await link.serverappio.PushMessages(
            serverappio_pb2.PushInsMessagesRequest(
                messages_list=[link.instruction(run_id, node_id)], run_id=run_id
            )
        )
        poll = fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
        pulled = await fleet.PullMessages(poll, metadata=key.metadata(link.clock.now))
    assert [message.metadata.dst_node_id for message in pulled.messages_list] == [node_id]


async def test_a_call_that_arrived_with_a_stale_timestamp_is_still_refused(link: Link) -> None:
    """Judging at arrival keeps the replay window: a late copy arrives late."""
    auth = NodeAuthenticator(link.state, None, clock=link.clock)
    metadata = NodeKey().metadata(link.clock.now)
    arrived_at = auth.now() + 16.0
    with pytest.raises(ServiceError, match="Invalid timestamp"):
        await auth.verify(metadata, arrived_at)
    link.clock.now += 16.0
    with pytest.raises(ServiceError, match="Invalid timestamp"):
        await auth.verify(metadata)


@pytest.mark.parametrize("method", ["CreateNode", "Ping"])
async def test_a_stale_signature_is_refused_for_a_retry_while_the_loop_is_behind(
    late_fleet: fleet_grpc.FleetStub, link: Link, method: str
) -> None:
    """It may have aged in our own accept queue: UNAVAILABLE, which a SuperNode retries."""
    key = NodeKey()
    node_id = await create_node(late_fleet, key, link)
    stale = key.metadata(link.clock.now, skew=-20.0)
    with pytest.raises(GRPCError) as error:
        if method == "CreateNode":
            await late_fleet.CreateNode(
                fleet_pb2.CreateNodeRequest(ping_interval=30), metadata=stale
            )
        else:
            await late_fleet.Ping(
                fleet_pb2.PingRequest(node=Node(node_id=node_id), ping_interval=30),
                metadata=stale,
            )
    assert (error.value.status, error.value.message) == (
        Status.UNAVAILABLE,
        "SuperLink is overloaded; the call waited too long to be served; retry",
    )


async def test_a_timestamp_from_the_future_is_refused_even_while_the_loop_is_behind(
    late_fleet: fleet_grpc.FleetStub, link: Link
) -> None:
    """Our slowness cannot make a call early: that is the caller's clock."""
    ahead = NodeKey().metadata(link.clock.now, skew=6.0)
    await assert_unauthenticated(
        late_fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30), metadata=ahead),
        "Invalid timestamp",
    )
