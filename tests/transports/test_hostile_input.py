"""Hostile input to every Fleet handler, over gRPC and REST: always a status, never a crash.

Random and mutated requests (hypothesis) must be answered with a status a client can act
on (never INTERNAL/UNKNOWN over gRPC, never 500 over REST), and what was stored before
must still be there, unchanged, afterwards. Over a real socket (``raw_h2``), messages and
HTTP/2 frames cut short, undecodable ``-bin`` metadata and non-ASCII headers get the same
(or a stream reset, as HTTP/2 has it),
and nothing a client sends makes us log a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.message import Message as ProtoMessage
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.proto import ProtoCodec
from grpclib.metadata import decode_bin_value
from grpclib.testing import ChannelFor
from h2.errors import ErrorCodes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superlink_async.services.fleet import FleetService
from superlink_async.transports.fleet_calls import FLEET_CALLS
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.servicers import FleetServicer
from superlink_async.transports.rest import PROTOBUF, ROUTES, fleet_rest_app
from superlink_async.wire import fleet_pb2, serverappio_pb2
from superlink_async.wire.node_pb2 import Node
from tests.services.conftest import Link
from tests.transports.conftest import MAX_MESSAGE, assert_no_traceback
from tests.transports.grpc.raw_h2 import grpc_frame, raw_connection, request_headers

pytestmark = pytest.mark.anyio

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
GRPC_METHODS = sorted(request.__name__.removesuffix("Request") for request in FLEET_CALLS)
#: Statuses a SuperNode can act on; INTERNAL or UNKNOWN would mean a handler crashed.
ACCEPTABLE = {
    Status.INVALID_ARGUMENT,
    Status.NOT_FOUND,
    Status.PERMISSION_DENIED,
    Status.RESOURCE_EXHAUSTED,
}


class RawCodec(ProtoCodec):
    """Bytes pass through as they are (so tests can send garbage); messages as protobuf."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message if isinstance(message, bytes) else bytes(message.SerializeToString())

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data if message_type is bytes else super().decode(data, message_type)


async def seeded(link: Link) -> tuple[int, str]:
    """A running run with one undelivered instruction: what hostile input must not disturb."""
    node_id = await link.state.create_node(3600)
    run_id = await link.running_run()
    instruction = link.instruction(run_id, node_id)
    response = await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[instruction])
    )
    return node_id, response.message_ids[0]


async def assert_untouched(link: Link, node_id: int, message_id: str) -> None:
    assert await link.state.node_exists(node_id)
    assert len(await link.state.get_runs()) == 1
    [pulled] = await link.state.pull_message_ins(node_id)
    assert pulled.metadata.message_id == message_id


@pytest.fixture
async def raw_channel(link: Link) -> AsyncIterator[Channel]:
    servicer = FleetServicer(
        FleetService(link.state, link.fabs, clock=link.clock), CallGate(MAX_MESSAGE)
    )
    async with ChannelFor([servicer], codec=RawCodec()) as channel:
        yield channel


async def call_raw(channel: Channel, method: str, body: bytes) -> None:
    async with channel.request(
        f"/flwr.proto.Fleet/{method}", Cardinality.UNARY_UNARY, bytes, bytes
    ) as stream:
        await stream.send_message(body, end=True)
        await stream.recv_message()


methods = st.sampled_from(GRPC_METHODS)


@EXAMPLES
@given(method=methods, body=st.binary(max_size=256))
async def test_random_bytes_over_grpc_get_a_status(
    link: Link, raw_channel: Channel, method: str, body: bytes
) -> None:
    try:
        await call_raw(raw_channel, method, body)
    except GRPCError as error:
        assert error.status in ACCEPTABLE, (error.status, error.message)


async def test_grpc_garbage_is_invalid_argument_and_changes_nothing(
    link: Link, raw_channel: Channel
) -> None:
    node_id, message_id = await seeded(link)
    with pytest.raises(GRPCError) as error:
        await call_raw(raw_channel, "DeleteNode", b"\xff\xff\xff")
    assert error.value.status is Status.INVALID_ARGUMENT
    await assert_untouched(link, node_id, message_id)


async def test_grpc_message_over_the_limit_is_refused_before_buffering(
    link: Link, raw_channel: Channel
) -> None:
    with pytest.raises(GRPCError) as error:
        await call_raw(raw_channel, "PushMessages", b"\0" * (MAX_MESSAGE + 1))
    assert error.value.status is Status.RESOURCE_EXHAUSTED
    assert (
        error.value.message
        == f"Received message larger than max ({MAX_MESSAGE + 1} vs. {MAX_MESSAGE})"
    )


@pytest.fixture
async def rest_client(link: Link) -> AsyncIterator[TestClient[Any, Any]]:
    app = fleet_rest_app(
        FleetService(link.state, link.fabs, clock=link.clock), CallGate(MAX_MESSAGE)
    )
    async with TestClient(TestServer(app)) as client:
        yield client


def mutated(message: ProtoMessage) -> st.SearchStrategy[bytes]:
    """Valid encodings with bytes flipped, cut or appended: near-misses a parser must survive."""
    raw = message.SerializeToString()
    return st.one_of(
        st.binary(max_size=256),
        st.integers(0, max(len(raw) - 1, 0)).map(lambda cut: raw[:cut]),
        st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(0, 255)).map(
            lambda flip: raw[: flip[0]] + bytes([flip[1]]) + raw[flip[0] + 1 :]
        ),
    )


@EXAMPLES
@given(
    route=st.sampled_from(sorted(ROUTES)),
    body=mutated(fleet_pb2.PingRequest(ping_interval=30.0)),
)
async def test_random_bodies_over_rest_never_500(
    link: Link, rest_client: TestClient[Any, Any], route: str, body: bytes
) -> None:
    headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
    response = await rest_client.post(f"/api/v0/fleet/{route}", data=body, headers=headers)
    assert response.status in {200, 400, 403, 404}, await response.text()


async def test_hostile_rest_bodies_leave_stored_state_intact(
    link: Link, rest_client: TestClient[Any, Any]
) -> None:
    node_id, message_id = await seeded(link)
    headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
    for route in ROUTES:
        for body in (b"\xff" * 8, b"\x0a\xff\xff\xff\xff\x0f", b"\0" * (MAX_MESSAGE + 1)):
            response = await rest_client.post(f"/api/v0/fleet/{route}", data=body, headers=headers)
            assert response.status in {400, 404, 413}
    await assert_untouched(link, node_id, message_id)


@dataclass
class Target:
    """A Fleet API on a real socket, with what ``seeded`` stored behind it."""

    link: Link
    port: int
    node_id: int

    def destructive_call(self, which: int) -> tuple[str, bytes]:
        """Path and gRPC frame of a call that would take the instruction or delete the node.

        If a hostile variant of one reached its handler, ``untouched`` would fail.
        """
        node = Node(node_id=self.node_id)
        method, request = [
            ("PullMessages", fleet_pb2.PullMessagesRequest(node=node)),
            ("DeleteNode", fleet_pb2.DeleteNodeRequest(node=node)),
        ][which]
        return f"/flwr.proto.Fleet/{method}", grpc_frame(request.SerializeToString())

    async def untouched(self) -> None:
        """What ``seeded`` stored is all still there: checked without taking the instruction.

        (``assert_untouched`` takes it, so it can check only once.)
        """
        state = self.link.state
        assert await state.node_exists(self.node_id)
        assert len(await state.get_runs()) == 1
        stats = await state.get_stats()
        assert (stats.instructions_waiting, stats.instructions_delivered) == (1, 0)


@pytest.fixture
async def target(link: Link, fleet_port: int) -> Target:
    """Seeded once per test: hypothesis runs all of a test's examples against it."""
    node_id, _ = await seeded(link)
    return Target(link, fleet_port, node_id)


#: Which destructive call, and where to cut its bytes (a fraction of their length).
cut_anywhere = given(call=st.integers(0, 1), cut=st.floats(0, 1, exclude_max=True))


async def test_an_intact_destructive_call_over_the_socket_would_show(target: Target) -> None:
    """The properties below are not vacuous: a well-formed PullMessages takes the instruction."""
    async with raw_connection(target.port) as client:
        answer = await client.call(*target.destructive_call(0))
    assert answer.grpc_status == Status.OK.value
    with pytest.raises(AssertionError):
        await target.untouched()


@EXAMPLES
@cut_anywhere
async def test_messages_cut_short_over_a_socket_are_invalid_argument(
    target: Target, log_records: list[logging.LogRecord], call: int, cut: float
) -> None:
    """A message (prefix included) cut anywhere, then END_STREAM: INVALID_ARGUMENT."""
    path, frame = target.destructive_call(call)
    async with raw_connection(target.port) as client:
        answer = await client.call(path, frame[: int(cut * len(frame))])
    assert answer.grpc_status == Status.INVALID_ARGUMENT.value, answer
    await target.untouched()
    assert_no_traceback(log_records)


@EXAMPLES
@cut_anywhere
async def test_http2_bytes_cut_anywhere_close_quietly(
    target: Target, log_records: list[logging.LogRecord], call: int, cut: float
) -> None:
    """A connection's bytes (preface, SETTINGS, HEADERS, DATA) cut anywhere, then EOF.

    The call never completes, so it never reaches its handler; the server closes the
    connection without a traceback.
    """
    path, frame = target.destructive_call(call)
    async with raw_connection(target.port, handshake=False) as client:
        sending = client.h2
        sending.initiate_connection()
        stream_id = sending.get_next_available_stream_id()
        sending.send_headers(stream_id, request_headers(path))
        sending.send_data(stream_id, frame, end_stream=True)
        everything = sending.data_to_send()
        await client.send_raw(everything[: int(cut * len(everything))])
        client.end_sending()
        await client.wait_closed()
    await target.untouched()
    assert_no_traceback(log_records)


base64_ish = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=16
)


def undecodable(value: str) -> bool:
    try:
        decode_bin_value(value.encode("ascii"))
    except ValueError:
        return True
    return False


@EXAMPLES
@given(
    call=st.integers(0, 1),
    key=st.sampled_from(["flwr-public-key-bin", "flwr-signature-bin"])
    | st.from_regex(r"\A[a-z][a-z0-9_.]{0,8}-bin\Z"),
    value=base64_ish.filter(undecodable),
)
async def test_undecodable_bin_metadata_is_invalid_argument_before_any_handler(
    target: Target, log_records: list[logging.LogRecord], call: int, key: str, value: str
) -> None:
    """A ``-bin`` value that is not base64 gets INVALID_ARGUMENT; the call does not run."""
    path, frame = target.destructive_call(call)
    async with raw_connection(target.port) as client:
        answer = await client.call(path, frame, [(key, value)])
    assert answer.grpc_status == Status.INVALID_ARGUMENT.value, answer
    await target.untouched()
    assert_no_traceback(log_records)


header_bytes = st.binary(min_size=1, max_size=24).filter(lambda raw: max(raw) >= 0x80)
ascii_name = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}\Z").map(str.encode)


@EXAMPLES
@given(
    call=st.integers(0, 1),
    header=st.tuples(ascii_name, header_bytes) | st.tuples(header_bytes, st.just(b"v")),
)
async def test_non_ascii_headers_are_a_stream_error_before_any_handler(
    target: Target, log_records: list[logging.LogRecord], call: int, header: tuple[bytes, bytes]
) -> None:
    """Header bytes beyond ASCII, in a name or a value: RST_STREAM PROTOCOL_ERROR, no call."""
    path, frame = target.destructive_call(call)
    async with raw_connection(target.port) as client:
        answer = await client.call(path, frame, [header])
    assert answer.reset_code == ErrorCodes.PROTOCOL_ERROR, answer
    await target.untouched()
    assert_no_traceback(log_records)
