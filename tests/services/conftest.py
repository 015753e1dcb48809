"""Services wired to their grpclib servicers over an in-memory channel (no sockets)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpclib._typing import IServable
from grpclib.testing import ChannelFor

from superlink_async.services.exec import ExecService
from superlink_async.services.fleet import FleetService
from superlink_async.services.runs import RunEvents
from superlink_async.services.serverappio import ServerAppIoService
from superlink_async.state import IN_MEMORY_DATABASE, LinkState, open_state
from superlink_async.state.base import SUPERLINK_NODE_ID
from superlink_async.state.fab_store import DirectoryFabStore
from superlink_async.testing import FakeClock
from superlink_async.transports.gate import CallGate
from superlink_async.transports.grpc.servicers import (
    ExecServicer,
    FleetServicer,
    ServerAppIoServicer,
)
from superlink_async.wire import (
    exec_grpc,
    exec_pb2,
    fleet_grpc,
    run_pb2,
    serverappio_grpc,
    serverappio_pb2,
)
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.message_pb2 import Message, Metadata
from superlink_async.wire.recorddict_pb2 import RecordDict
from tests.fabs import make_fab

#: The replica id the ServerAppIo service claims runs for.
REPLICA = "replica-under-test"


@dataclass
class Link:
    """Stubs for the three APIs plus what tests need to look behind them."""

    fleet: fleet_grpc.FleetStub
    serverappio: serverappio_grpc.ServerAppIoStub
    exec: exec_grpc.ExecStub
    state: LinkState
    fabs: DirectoryFabStore
    clock: FakeClock
    stopped_runs: list[int] = field(default_factory=list)
    claimed_runs: list[int] = field(default_factory=list)

    async def start_run(self, fab: bytes | None = None) -> int:
        """Start a run over Exec, as ``flwr run`` does."""
        content = make_fab() if fab is None else fab
        response = await self.exec.StartRun(exec_pb2.StartRunRequest(fab=Fab(content=content)))
        assert response.HasField("run_id")
        return response.run_id

    async def running_run(self) -> int:
        """A run that a ServerApp has claimed and set running."""
        run_id = await self.start_run()
        await self.serverappio.PullServerAppInputs(serverappio_pb2.PullServerAppInputsRequest())
        await self.serverappio.UpdateRunStatus(
            run_pb2.UpdateRunStatusRequest(
                run_id=run_id, run_status=run_pb2.RunStatus(status="running")
            )
        )
        return run_id

    def instruction(self, run_id: int, node_id: int, ttl: float = 3600.0) -> Message:
        """A well-formed instruction from the SuperLink to ``node_id``."""
        return Message(
            metadata=Metadata(
                run_id=run_id,
                src_node_id=SUPERLINK_NODE_ID,
                dst_node_id=node_id,
                message_type="train",
                ttl=ttl,
                created_at=self.clock.now,
            ),
            content=RecordDict(),
        )

    def reply(self, instruction: Message, ttl: float = 600.0) -> Message:
        """A well-formed reply from the node an instruction was sent to."""
        ins = instruction.metadata
        return Message(
            metadata=Metadata(
                run_id=ins.run_id,
                src_node_id=ins.dst_node_id,
                dst_node_id=SUPERLINK_NODE_ID,
                reply_to_message_id=ins.message_id,
                message_type=ins.message_type,
                ttl=ttl,
                created_at=self.clock.now,
            ),
            content=RecordDict(),
        )


@asynccontextmanager
async def open_link(database: str, tmp_path: Path) -> AsyncIterator[Link]:
    """The three APIs over the state backend that ``database`` names (as ``--database``)."""
    clock = FakeClock(time.time())  # real time: node keys sign the real time
    async with open_state(database, clock=clock) as state:
        fabs = DirectoryFabStore(tmp_path / "ffs")
        events = RunEvents()
        gate = CallGate()
        stopped: list[int] = []
        claimed: list[int] = []

        async def on_stop(run_id: int) -> None:
            stopped.append(run_id)

        servicers: list[IServable] = [
            FleetServicer(FleetService(state, fabs, clock=clock), gate),
            ServerAppIoServicer(
                ServerAppIoService(
                    state,
                    fabs,
                    events,
                    replica_id=REPLICA,
                    on_claim=claimed.append,
                    clock=clock,
                ),
                gate,
            ),
            ExecServicer(ExecService(state, fabs, events, on_stop=on_stop, clock=clock), gate),
        ]
        async with ChannelFor(servicers) as channel:
            yield Link(
                fleet=fleet_grpc.FleetStub(channel),
                serverappio=serverappio_grpc.ServerAppIoStub(channel),
                exec=exec_grpc.ExecStub(channel),
                state=state,
                fabs=fabs,
                clock=clock,
                stopped_runs=stopped,
                claimed_runs=claimed,
            )


@pytest.fixture(params=["in-memory", "sqlite-file", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``--database`` a service test runs over: each runs once on every backend.

    PostgreSQL is a fresh database on the tests' own server, started when first needed.
    """
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return IN_MEMORY_DATABASE if request.param == "in-memory" else str(tmp_path / "state.db")


@pytest.fixture
async def link(database: str, tmp_path: Path) -> AsyncIterator[Link]:
    async with open_link(database, tmp_path) as opened:
        yield opened
