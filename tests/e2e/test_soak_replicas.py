"""Soak: a few hundred simulated SuperNodes that switch replica on every call.

Two replicas on one PostgreSQL database; each simulated node (the benchmark's
:class:`~benchmarks.loadgen.SimNode`, flwr 1.18.0's Fleet behaviour with signed calls) sends
every call to the other replica than its previous one, so it registers through one, pulls
through the other, answers through either. A ServerApp driver on replica 1 runs several
rounds (one instruction per node, then every reply pulled): every instruction is delivered
exactly once, every reply a node had acknowledged is pulled, and the whole soak is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import grpc
import pytest

from benchmarks.driver import ServerAppDriver
from benchmarks.loadgen import PULL_PERIOD, Recorder, SimNode
from benchmarks.wire import FleetStub, open_channel
from superlink_async.testing import LocalFederation
from superlink_async.wire import message_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NODES = 300
ROUNDS = 4
#: Seconds over which the nodes register (CreateNode), like a fleet coming up.
RAMP = 5.0
PAYLOAD_BYTES = 1_000
#: The driver's pull period: shorter than the grid's 3 s, so rounds are not rounded up.
DRIVER_PULL = 0.5
#: One round: every node pulls within its 3 s period and answers at once.
ROUND_TIMEOUT = 30.0
#: The whole soak, from the first registration to the last check.
SOAK_TIMEOUT = 120.0

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class Alternating(grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT]):
    """One Fleet method of one node, each call made on the replica whose turn it is."""

    def __init__(
        self,
        calls: Sequence[grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT]],
        turns: Iterator[int],
        served: Counter[int],
    ) -> None:
        self._calls = calls
        self._turns = turns
        self._served = served

    def __call__(
        self,
        request: RequestT,
        *,
        timeout: float | None = None,
        metadata: grpc.aio.Metadata | Sequence[tuple[str, str | bytes]] | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> grpc.aio.UnaryUnaryCall[RequestT, ResponseT]:
        turn = next(self._turns)
        self._served[turn] += 1
        return self._calls[turn](
            request,
            timeout=timeout,
            metadata=metadata,
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


class AlternatingFleetStub(FleetStub):
    """A node's Fleet calls (all methods sharing one turn), made on each replica in turn."""

    def __init__(self, channels: Sequence[grpc.aio.Channel], served: Counter[int]) -> None:
        stubs = [FleetStub(channel) for channel in channels]
        turns = itertools.cycle(range(len(stubs)))
        self.create_node = Alternating([stub.create_node for stub in stubs], turns, served)
        self.ping = Alternating([stub.ping for stub in stubs], turns, served)
        self.pull_messages = Alternating([stub.pull_messages for stub in stubs], turns, served)
        self.push_messages = Alternating([stub.push_messages for stub in stubs], turns, served)
        self.get_run = Alternating([stub.get_run for stub in stubs], turns, served)
        self.get_fab = Alternating([stub.get_fab for stub in stubs], turns, served)


class CountingNode(SimNode):
    """A simulated SuperNode that notes each instruction it got and each reply acknowledged."""

    def __init__(
        self,
        stub: FleetStub,
        recorder: Recorder,
        delivered: Counter[str],
        acknowledged: set[str],
    ) -> None:
        super().__init__(stub, 0, recorder)
        self._delivered = delivered
        self._acknowledged = acknowledged

    async def _answer(self, ins: message_pb2.Message) -> None:
        self._delivered[ins.metadata.message_id] += 1
        await super()._answer(ins)
        self._acknowledged.add(ins.metadata.message_id)


@pytest.fixture
def two_replicas(
    tmp_path: Path, superlink_command: list[str], postgres_url: str
) -> Iterator[list[LocalFederation]]:
    """Two replicas on one fresh database, without ServerApp children (the driver is one)."""
    replicas = [
        LocalFederation(
            tmp_path / name,
            superlink_command,
            num_supernodes=0,
            superlink_args=["--database", postgres_url, "--isolation", "process"],
        )
        for name in ("r1", "r2")
    ]
    try:
        for replica in replicas:
            replica.start()
        yield replicas
    finally:
        for replica in replicas:
            replica.close()


def fleet_address(replica: LocalFederation) -> str:
    return replica.ports.address(replica.ports.fleet)


async def test_nodes_switching_replica_every_call_lose_and_repeat_nothing(
    two_replicas: list[LocalFederation], targets_reference: bool
) -> None:
    """300 nodes alternating between two replicas, 4 rounds driven through replica 1: each
    round every node's instruction is delivered once and its reply pulled; no node gives up;
    both replicas serve half the Fleet calls."""
    if targets_reference:
        pytest.skip("flower-superlink 1.18.0 has no PostgreSQL backend")
    first = two_replicas[0]
    delivered: Counter[str] = Counter()
    acknowledged: set[str] = set()
    served: Counter[int] = Counter()
    recorder = Recorder()
    channels: list[grpc.aio.Channel] = []
    nodes: list[asyncio.Task[bool]] = []
    started = time.monotonic()
    try:
        with anyio.fail_after(SOAK_TIMEOUT):
            for _ in range(NODES):
                pair = [
                    open_channel(fleet_address(replica), own_connection=True)
                    for replica in two_replicas
                ]
                channels += pair
                node = CountingNode(
                    AlternatingFleetStub(pair, served), recorder, delivered, acknowledged
                )
                nodes.append(asyncio.create_task(node.live(lambda _registered: None)))
                await asyncio.sleep(RAMP / NODES)
            address = first.ports.address
            async with ServerAppDriver(
                address(first.ports.exec), address(first.ports.serverappio), DRIVER_PULL
            ) as driver:
                assert await driver.wait_for_nodes(NODES, ROUND_TIMEOUT) == NODES
                registered = time.monotonic()
                outcomes = [
                    await driver.round(PAYLOAD_BYTES, PAYLOAD_BYTES, ROUND_TIMEOUT)
                    for _ in range(ROUNDS)
                ]
                rounds_done = time.monotonic()
                # A late second delivery would come with a node's next pull.
                await asyncio.sleep(PULL_PERIOD + 1.0)
    finally:
        # A node that ended by itself gave up (or crashed): a SuperNode would have exited.
        gave_up = [task for task in nodes if task.done()]
        for task in nodes:
            task.cancel()
        await asyncio.gather(*nodes, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in channels))
    walls = ", ".join(f"{outcome.wall_seconds:.1f}s" for outcome in outcomes)
    print(
        f"soak: {NODES} nodes registered in {registered - started:.1f}s, "
        f"{ROUNDS} rounds in {rounds_done - registered:.1f}s ({walls}); "
        f"Fleet calls by replica: {dict(served)}"
    )
    assert not gave_up
    assert [(outcome.nodes, outcome.replies, outcome.failures) for outcome in outcomes] == [
        (NODES, NODES, {})
    ] * ROUNDS
    assert len(delivered) == NODES * ROUNDS
    assert set(delivered.values()) == {1}
    assert acknowledged == set(delivered)
    assert min(served.values()) >= 0.45 * sum(served.values())
