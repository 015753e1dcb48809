"""Non-finite and absurd numbers from clients, on every backend: a clear status, state intact.

NaN, infinities, zero and negative values as ``ping_interval`` (CreateNode, Ping) or as a
message's ``ttl``/``created_at`` (ServerAppIo and Fleet PushMessages) are refused with
INVALID_ARGUMENT (a reply is dropped with OK, as the reference answers replies), nothing
stored changes, and no traceback is logged: the input is the client's, not our fault.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpclib import GRPCError, Status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superlink_async.services.fleet import FleetService
from superlink_async.services.validation import MAX_PING_INTERVAL
from superlink_async.transports.gate import CallGate
from superlink_async.transports.rest import PROTOBUF, fleet_rest_app
from superlink_async.wire import fleet_pb2, serverappio_pb2
from superlink_async.wire.message_pb2 import Message
from superlink_async.wire.node_pb2 import Node
from tests.logged import assert_no_traceback
from tests.services.conftest import Link, open_link

pytestmark = pytest.mark.anyio

EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Numbers no ping interval or TTL can mean; the finite ones among them too small.
nonsense = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0]),
    st.floats(max_value=0.0),
    st.floats(allow_nan=True).filter(math.isnan),
)
#: A message's metadata with one non-finite number in it.
non_finite_metadata = given(
    field=st.sampled_from(["ttl", "created_at"]),
    value=st.sampled_from([math.nan, math.inf, -math.inf]),
)


@pytest.fixture(params=[":flwr-in-memory-state:", "sqlite-file"])
async def backend_link(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Link]:
    """The APIs over the in-memory backend and over a SQLite file (where NaN used to crash)."""
    database = str(tmp_path / "state.db") if request.param == "sqlite-file" else request.param
    async with open_link(database, tmp_path) as opened:
        yield opened


async def seeded(link: Link) -> tuple[int, int, Message]:
    """A node, a running run and one instruction stored for the node."""
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0))
    node_id = node.node.node_id
    run_id = await link.running_run()
    instruction = link.instruction(run_id, node_id)
    pushed = await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[instruction])
    )
    instruction.metadata.message_id = pushed.message_ids[0]
    return node_id, run_id, instruction


async def assert_invalid_argument(call: object, text: str) -> None:
    with pytest.raises(GRPCError) as error:
        await call  # type: ignore[misc]
    assert error.value.status is Status.INVALID_ARGUMENT
    assert error.value.message is not None
    assert text in error.value.message


@EXAMPLES
@given(interval=nonsense)
async def test_create_node_with_a_nonsense_ping_interval_is_refused(
    backend_link: Link, log_records: list[logging.LogRecord], interval: float
) -> None:
    """INVALID_ARGUMENT over gRPC, 400 over REST (aiohttp), both with the reason."""
    before = await backend_link.state.get_stats()
    reason = "`ping_interval` must be a finite number of seconds above zero"
    await assert_invalid_argument(
        backend_link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=interval)),
        reason,
    )
    app = fleet_rest_app(
        FleetService(backend_link.state, backend_link.fabs, clock=backend_link.clock), CallGate()
    )
    body = fleet_pb2.CreateNodeRequest(ping_interval=interval).SerializeToString()
    headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/api/v0/fleet/create-node", data=body, headers=headers)
        assert response.status == 400
        assert reason in await response.text()
    assert await backend_link.state.get_stats() == before
    assert_no_traceback(log_records)


@EXAMPLES
@given(interval=nonsense)
async def test_ping_with_a_nonsense_interval_is_refused_and_liveness_kept(
    backend_link: Link, log_records: list[logging.LogRecord], interval: float
) -> None:
    node = await backend_link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30.0))
    node_id = node.node.node_id
    await assert_invalid_argument(
        backend_link.fleet.Ping(
            fleet_pb2.PingRequest(node=Node(node_id=node_id), ping_interval=interval)
        ),
        "`ping_interval` must be a finite number of seconds above zero",
    )
    backend_link.clock.now += 31
    assert node_id not in await backend_link.state.get_online_nodes()
    assert_no_traceback(log_records)


async def test_a_huge_ping_interval_is_clamped_so_the_node_expires(backend_link: Link) -> None:
    """1e300 s (what the reference stores as asked) lasts MAX_PING_INTERVAL, no longer."""
    node = await backend_link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=1e300))
    node_id = node.node.node_id
    backend_link.clock.now += MAX_PING_INTERVAL - 1
    assert await backend_link.state.get_online_nodes() == [node_id]
    backend_link.clock.now += 2
    assert await backend_link.state.get_online_nodes() == []


@EXAMPLES
@non_finite_metadata
async def test_messages_with_a_non_finite_number_are_refused_and_nothing_is_lost(
    backend_link: Link, log_records: list[logging.LogRecord], field: str, value: float
) -> None:
    """An instruction is INVALID_ARGUMENT; a reply is dropped with OK (the reference's answer)."""
    node_id, run_id, stored = await seeded(backend_link)
    hostile = backend_link.instruction(run_id, node_id)
    setattr(hostile.metadata, field, value)
    await assert_invalid_argument(
        backend_link.serverappio.PushMessages(
            serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[hostile])
        ),
        "Malformed PushMessages",
    )
    pulled = await backend_link.fleet.PullMessages(
        fleet_pb2.PullMessagesRequest(node=Node(node_id=node_id))
    )
    assert [message.metadata.message_id for message in pulled.messages_list] == [
        stored.metadata.message_id
    ]
    hostile_reply = backend_link.reply(stored)
    setattr(hostile_reply.metadata, field, value)
    node = Node(node_id=node_id)
    pushed = await backend_link.fleet.PushMessages(
        fleet_pb2.PushMessagesRequest(node=node, messages_list=[hostile_reply])
    )
    assert dict(pushed.results) == {}
    good = await backend_link.fleet.PushMessages(
        fleet_pb2.PushMessagesRequest(node=node, messages_list=[backend_link.reply(stored)])
    )
    assert len(good.results) == 1
    assert_no_traceback(log_records)
