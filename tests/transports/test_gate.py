"""Admission control: which calls are shed while the loop is overloaded, and their answers;
how the gate counts calls, follows the loop's lag and drains."""

from __future__ import annotations

import time

import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpclib import GRPCError, Status
from grpclib.testing import ChannelFor

from superlink_async.config import DEFAULT_MAX_FLEET_IN_FLIGHT, DEFAULT_OVERLOAD_LAG
from superlink_async.loop_lag import LoopLag
from superlink_async.metrics import Metrics
from superlink_async.services.fleet import FleetService
from superlink_async.transports.gate import (
    Admission,
    CallGate,
    OverloadedError,
    ShuttingDownError,
)
from superlink_async.transports.grpc.servicers import FleetServicer
from superlink_async.transports.rest import PROTOBUF, fleet_rest_app
from superlink_async.wire import fleet_grpc, fleet_pb2
from superlink_async.wire.node_pb2 import Node
from tests.polling import eventually
from tests.services.conftest import Link

pytestmark = pytest.mark.anyio

LATE = 0.2
NEVER_SHED = ("Ping", "PushMessages", "GetRun", "GetFab", "DeleteNode")


def late_gate(
    level: float = LATE,
    max_lag: float = DEFAULT_OVERLOAD_LAG,
    max_fleet_in_flight: int = DEFAULT_MAX_FLEET_IN_FLIGHT,
) -> CallGate:
    """A gate whose loop measured ``level`` seconds of lag."""
    lag = LoopLag()
    lag.level = level
    admission = Admission(max_lag, max_fleet_in_flight)
    return CallGate(lag=lag, admission=admission, metrics=Metrics("gate-test"))


async def enter(gate: CallGate, api: str, method: str) -> None:
    async with gate.admit(api, method):
        pass


async def test_a_late_loop_is_behind_and_one_on_time_is_not() -> None:
    assert late_gate(level=0.05, max_lag=0.05).behind
    assert not late_gate(level=0.04, max_lag=0.05).behind
    assert not late_gate(level=10.0, max_lag=0).behind


@pytest.mark.parametrize("method", ["PullMessages", "CreateNode", *NEVER_SHED])
async def test_a_late_loop_alone_refuses_nothing(method: str) -> None:
    """A refused poll comes back within a second, not after 3 s: refusing raised the load."""
    await enter(late_gate(level=10.0, max_lag=0.05), "Fleet", method)


@pytest.mark.parametrize("api", ["Fleet", "FleetRest"])
@pytest.mark.parametrize("method", ["PullMessages", "CreateNode"])
async def test_polls_and_registrations_are_shed_while_too_many_fleet_calls_are_in_flight(
    api: str, method: str
) -> None:
    gate = late_gate(level=0.0, max_fleet_in_flight=2)
    async with gate.admit("Fleet", "PushMessages"), gate.admit("FleetRest", "GetFab"):
        assert gate.fleet_in_flight == 2 and gate.crowded
        with pytest.raises(OverloadedError, match="overloaded; retry later"):
            await enter(gate, api, method)
        assert gate.in_flight == 2
    await enter(gate, api, method)


@pytest.mark.parametrize("method", NEVER_SHED)
async def test_pings_and_work_on_an_instruction_are_never_shed(method: str) -> None:
    gate = late_gate(max_fleet_in_flight=1)
    async with gate.admit("Fleet", "PushMessages"):
        assert gate.crowded
        await enter(gate, "Fleet", method)


@pytest.mark.parametrize("api", ["ServerAppIo", "Exec", "GrpcAdapter"])
async def test_other_apis_are_never_shed_nor_counted(api: str) -> None:
    """A ServerApp's PullMessages is not a SuperNode's poll."""
    gate = late_gate(max_fleet_in_flight=1)
    async with gate.admit(api, "PullMessages"):
        assert gate.fleet_in_flight == 0
        await enter(gate, api, "PullMessages")


async def test_a_bound_of_zero_sheds_nothing() -> None:
    gate = late_gate(max_fleet_in_flight=0)
    async with gate.admit("Fleet", "PushMessages"):
        await enter(gate, "Fleet", "PullMessages")


async def test_shed_calls_and_early_answers_are_counted() -> None:
    gate = late_gate(max_fleet_in_flight=1)
    async with gate.admit("Fleet", "GetRun"):
        for _ in range(3):
            with pytest.raises(OverloadedError):
                await enter(gate, "Fleet", "PullMessages")
    gate.count_early_answer("PullMessages")
    assert gate._metrics is not None
    text = gate._metrics.exposition().decode()
    assert 'superlink_calls_shed_total{api="Fleet",method="PullMessages"} 3.0' in text
    assert 'superlink_idle_polls_answered_early_total{method="PullMessages"} 1.0' in text


async def test_draining_wins_over_shedding() -> None:
    gate = late_gate(max_fleet_in_flight=1)
    await gate.drain(0)
    with pytest.raises(ShuttingDownError):
        await enter(gate, "Fleet", "PullMessages")


async def test_a_shed_grpc_poll_is_unavailable_with_a_message(link: Link) -> None:
    """UNAVAILABLE is the one code a 1.18 SuperNode retries (with backoff) for a poll."""
    gate = late_gate(max_fleet_in_flight=1)
    async with ChannelFor([FleetServicer(FleetService(link.state, link.fabs), gate)]) as channel:
        stub = fleet_grpc.FleetStub(channel)
        async with gate.admit("Fleet", "PushMessages"):
            with pytest.raises(GRPCError) as raised:
                await stub.PullMessages(fleet_pb2.PullMessagesRequest(node=Node(node_id=1)))
        assert (raised.value.status, raised.value.message) == (
            Status.UNAVAILABLE,
            "SuperLink is overloaded; retry later",
        )
        created = await stub.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=30))
        assert created.node.node_id


async def test_a_shed_rest_poll_is_503(link: Link) -> None:
    gate = late_gate(max_fleet_in_flight=1)
    app = fleet_rest_app(FleetService(link.state, link.fabs), gate)
    body = fleet_pb2.PullMessagesRequest(node=Node(node_id=1)).SerializeToString()
    headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
    async with TestClient(TestServer(app)) as client, gate.admit("Fleet", "PushMessages"):
        response = await client.post("/api/v0/fleet/pull-messages", data=body, headers=headers)
        assert (response.status, await response.text()) == (
            503,
            "SuperLink is overloaded; retry later",
        )


# --- the gate on its own: admission, counting, lag, drain ---------------------------------


class Failure(Exception):
    """What a call's handler raised."""


async def test_an_admitted_call_is_counted_until_it_ends_even_if_it_fails() -> None:
    gate = CallGate()
    assert (gate.in_flight, gate.fleet_in_flight, gate.draining) == (0, 0, False)
    async with gate.admit("Fleet", "Ping"):
        assert (gate.in_flight, gate.fleet_in_flight) == (1, 1)
        async with gate.admit("ServerAppIo", "PullMessages"):
            assert (gate.in_flight, gate.fleet_in_flight) == (2, 1)
        assert (gate.in_flight, gate.fleet_in_flight) == (1, 1)
    with pytest.raises(Failure):
        async with gate.admit("FleetRest", "PushMessages"):
            assert (gate.in_flight, gate.fleet_in_flight) == (1, 1)
            raise Failure
    assert (gate.in_flight, gate.fleet_in_flight) == (0, 0)


async def test_crowded_starts_exactly_at_the_bound_and_ends_below_it() -> None:
    gate = late_gate(level=0.0, max_fleet_in_flight=2)
    async with gate.admit("Fleet", "Ping"):
        assert not gate.crowded
        await enter(gate, "Fleet", "PullMessages")
        async with gate.admit("Fleet", "GetRun"):
            assert gate.crowded
            async with gate.admit("Exec", "StartRun"):  # other APIs do not crowd the Fleet
                assert gate.fleet_in_flight == 2
        assert not gate.crowded
        await enter(gate, "Fleet", "CreateNode")


async def test_admitted_calls_are_counted_and_timed_by_outcome() -> None:
    gate = late_gate()
    await enter(gate, "Fleet", "Ping")
    with pytest.raises(Failure):
        async with gate.admit("Fleet", "Ping"):
            raise Failure
    gate.accept_paused("Fleet API (gRPC-rere)")
    assert gate._metrics is not None
    text = gate._metrics.exposition().decode()
    assert 'superlink_rpc_requests_total{api="Fleet",code="OK",method="Ping"} 1.0' in text
    assert 'superlink_rpc_requests_total{api="Fleet",code="Failure",method="Ping"} 1.0' in text
    assert 'superlink_rpc_duration_seconds_count{api="Fleet",method="Ping"} 2.0' in text
    assert 'superlink_accept_paused_total{listener="Fleet API (gRPC-rere)"} 1.0' in text


def stall(seconds: float) -> None:
    """Hold the event loop, as a burst of CPU-bound work would."""
    time.sleep(seconds)


async def test_behind_follows_the_measured_lag_of_the_loop() -> None:
    """A loop held for 0.3 s is behind at a 50 ms bound; once it runs on time again, it is not."""
    lag = LoopLag()
    gate = CallGate(lag=lag, admission=Admission(max_lag=0.05))
    async with anyio.create_task_group() as tasks:
        await tasks.start(lag.run)
        await anyio.sleep(3 * lag.tick)  # a few ticks measured
        await eventually(lambda: not gate.behind, 5)  # on time
        stall(0.3)
        await anyio.sleep(2 * lag.tick)  # the late tick is measured
        assert gate.behind
        await eventually(lambda: not gate.behind, 5, every=lag.tick)
        assert lag.level < 0.05
        tasks.cancel_scope.cancel()


async def test_a_drain_with_nothing_in_flight_ends_at_once() -> None:
    gate = CallGate()
    with anyio.fail_after(1):
        assert await gate.drain(60)
    assert gate.draining


async def test_a_drain_waits_for_the_calls_in_flight_and_refuses_new_ones() -> None:
    gate = CallGate()
    release = anyio.Event()
    finished: list[str] = []

    async def call(name: str) -> None:
        async with gate.admit("Fleet", "PushMessages"):
            await release.wait()
            finished.append(name)

    async with anyio.create_task_group() as tasks:
        await enter(gate, "Fleet", "Ping")  # one call that ended before: the gate was idle
        tasks.start_soon(call, "first")
        tasks.start_soon(call, "second")
        await anyio.sleep(0.01)
        assert gate.in_flight == 2
        drained: list[bool] = []

        async def drain() -> None:
            drained.append(await gate.drain(60))

        tasks.start_soon(drain)
        await anyio.sleep(0.01)
        assert gate.draining and not drained  # still waiting for the two calls
        with pytest.raises(ShuttingDownError, match="SuperLink is shutting down"):
            await enter(gate, "ServerAppIo", "PullMessages")
        release.set()
        await eventually(lambda: bool(drained), 1)
    assert drained == [True]
    assert sorted(finished) == ["first", "second"]
    assert gate.in_flight == 0


async def test_a_drain_gives_up_after_its_grace_on_a_call_that_outlives_it() -> None:
    gate = CallGate()
    async with anyio.create_task_group() as tasks:

        async def endless() -> None:
            async with gate.admit("Exec", "StreamLogs"):
                await anyio.sleep_forever()

        tasks.start_soon(endless)
        await anyio.sleep(0.01)
        started = time.monotonic()
        assert not await gate.drain(0.2)
        assert 0.2 <= time.monotonic() - started < 2.0
        assert gate.in_flight == 1
        tasks.cancel_scope.cancel()
    assert gate.in_flight == 0
