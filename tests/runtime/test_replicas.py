"""Several SuperLink replicas on one real PostgreSQL database serve one federation.

Two or three in-process SuperLinks (``async with SuperLink(config)``, real sockets) share a
throwaway database; clients are grpclib stubs, as a SuperNode, ``flwr`` and a ServerApp
speak. Children of ``--isolation subprocess`` replicas are a stand-in ServerApp
(``serverapp_stand_in.py``) that claims a run through its replica and then waits. Leases are
short (1 s) so that expiry is pinned within seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from grpclib.client import Channel

from superlink_async import Config, SuperLink
from superlink_async.config import ISOLATION_SUBPROCESS, Address
from superlink_async.runtime.replica import lost_run_details, shutdown_run_details
from superlink_async.runtime.shutdown import HANDOVER
from superlink_async.state import LinkState, open_state
from superlink_async.state.base import (
    SUPERLINK_NODE_ID,
    RunRecord,
    RunStatus,
    StateUnavailableError,
)
from superlink_async.state.factory import fab_store_for
from superlink_async.testing import descendants
from superlink_async.testing.postgres import running_postgres_server
from superlink_async.wire import (
    exec_grpc,
    exec_pb2,
    fleet_grpc,
    fleet_pb2,
    log_pb2,
    run_pb2,
    serverappio_grpc,
    serverappio_pb2,
)
from superlink_async.wire.fab_pb2 import Fab
from superlink_async.wire.message_pb2 import Message, Metadata
from superlink_async.wire.node_pb2 import Node
from superlink_async.wire.recorddict_pb2 import ConfigRecord, RecordDict
from tests.fabs import make_fab
from tests.node_keys import NodeKey
from tests.polling import eventually, process_gone
from tests.ports import loopback_config
from tests.runtime.test_shutdown import stage_took

pytestmark = pytest.mark.anyio

#: Every replica's lease in these tests: renewed (and others reaped) every 0.25 s.
LEASE = 1.0
#: What scheduling on a shared 2-CPU machine may add to a bound.
SLACK = 1.0
#: Longest a stand-in child may take to start and claim (a Python process importing grpclib).
CLAIM_SECONDS = 20.0
STAND_IN = Path(__file__).with_name("serverapp_stand_in.py")


def replica(tmp_path: Path, name: str, database: str, **changes: Any) -> Config:
    """A replica's config: its own loopback ports, the shared database, a short lease."""
    return loopback_config(
        tmp_path / name,
        database=database,
        replica_id=name,
        replica_lease=LEASE,
        shutdown_grace=0.5,
        **changes,
    )


def launching(config: Config, note: Path) -> Config:
    """``config`` with ``--isolation subprocess`` launching the stand-in, which notes claims."""
    return replace(
        config,
        isolation=ISOLATION_SUBPROCESS,
        serverapp_command=(sys.executable, str(STAND_IN), str(note)),
    )


def claims(note: Path) -> list[tuple[int, int, str]]:
    """(run id, child pid, ServerAppIo address) for each claim a stand-in child noted."""
    if not note.exists():
        return []
    return [
        (int(run_id), int(pid), address)
        for run_id, pid, address in (line.split() for line in note.read_text().splitlines())
    ]


def channel(address: str) -> closing[Channel]:
    parsed = Address.parse(address)
    return closing(Channel(parsed.host, parsed.port))


def fleet_address(config: Config) -> str:
    assert config.fleet_api_address is not None
    return config.fleet_api_address


async def start_run(config: Config) -> int:
    """``flwr run`` through this replica's Exec API."""
    with channel(config.exec_api_address) as exec_channel:
        started = await exec_grpc.ExecStub(exec_channel).StartRun(
            exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
        )
    return started.run_id


async def claim_and_run(config: Config, run_id: int) -> None:
    """A ServerApp started by hand (``--isolation process``) claims ``run_id`` through this
    replica and reports it running."""
    with channel(config.serverappio_api_address) as appio_channel:
        appio = serverappio_grpc.ServerAppIoStub(appio_channel)
        inputs = await appio.PullServerAppInputs(serverappio_pb2.PullServerAppInputsRequest())
        assert inputs.run.run_id == run_id
        await set_status(appio, run_id, "running")


async def set_status(
    appio: serverappio_grpc.ServerAppIoStub, run_id: int, status: str, sub_status: str = ""
) -> None:
    await appio.UpdateRunStatus(
        run_pb2.UpdateRunStatusRequest(
            run_id=run_id, run_status=run_pb2.RunStatus(status=status, sub_status=sub_status)
        )
    )


async def status_of(state: LinkState, run_id: int) -> RunStatus:
    run = await state.get_run(run_id)
    assert run is not None
    return run.status


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[LinkState]:
    """The shared database, opened as a bystander: to prepare runs and read what happened."""
    async with open_state(postgres_url) as state:
        yield state


async def test_a_node_registered_through_one_replica_is_served_through_every_other(
    postgres_url: str, tmp_path: Path
) -> None:
    """The node registers through A and pulls through B the instruction a ServerApp pushed
    through C; its reply, pushed through B, is pulled through A. Neither is handed out twice,
    whichever replica is asked again (the reply's id then gets the error reply a pulled
    reply always gets)."""
    a, b, c = (replica(tmp_path, name, postgres_url) for name in ("link-a", "link-b", "link-c"))
    key = NodeKey()
    async with SuperLink(a), SuperLink(b), SuperLink(c):
        with (
            channel(fleet_address(a)) as fleet_a,
            channel(fleet_address(b)) as fleet_b,
            channel(a.serverappio_api_address) as appio_a,
            channel(c.serverappio_api_address) as appio_c,
        ):
            nodes_a, nodes_b = fleet_grpc.FleetStub(fleet_a), fleet_grpc.FleetStub(fleet_b)
            serverapp_a = serverappio_grpc.ServerAppIoStub(appio_a)
            serverapp_c = serverappio_grpc.ServerAppIoStub(appio_c)
            created = await nodes_a.CreateNode(
                fleet_pb2.CreateNodeRequest(ping_interval=30), metadata=key.metadata(time.time())
            )
            node = Node(node_id=created.node.node_id)
            run_id = await start_run(c)
            await claim_and_run(c, run_id)
            instruction = Message(
                metadata=Metadata(
                    run_id=run_id,
                    src_node_id=SUPERLINK_NODE_ID,
                    dst_node_id=node.node_id,
                    message_type="train",
                    ttl=3600.0,
                    created_at=time.time(),
                ),
                content=RecordDict(),
            )
            pushed = await serverapp_c.PushMessages(
                serverappio_pb2.PushInsMessagesRequest(run_id=run_id, messages_list=[instruction])
            )
            (message_id,) = pushed.message_ids
            pulled = await nodes_b.PullMessages(
                fleet_pb2.PullMessagesRequest(node=node), metadata=key.metadata(time.time())
            )
            assert [each.metadata.message_id for each in pulled.messages_list] == [message_id]
            for nodes in (nodes_a, nodes_b):
                again = await nodes.PullMessages(
                    fleet_pb2.PullMessagesRequest(node=node), metadata=key.metadata(time.time())
                )
                assert list(again.messages_list) == []
            reply = Message(
                metadata=Metadata(
                    run_id=run_id,
                    src_node_id=node.node_id,
                    dst_node_id=SUPERLINK_NODE_ID,
                    reply_to_message_id=message_id,
                    message_type="train",
                    ttl=600.0,
                    created_at=time.time(),
                ),
                content=RecordDict(),
            )
            await nodes_b.PushMessages(
                fleet_pb2.PushMessagesRequest(node=node, messages_list=[reply]),
                metadata=key.metadata(time.time()),
            )
            request = serverappio_pb2.PullResMessagesRequest(
                run_id=run_id, message_ids=[message_id]
            )
            replies = await serverapp_a.PullMessages(request)
            assert [each.metadata.reply_to_message_id for each in replies.messages_list] == [
                message_id
            ]
            for serverapp in (serverapp_a, serverapp_c):
                (gone,) = (await serverapp.PullMessages(request)).messages_list
                assert gone.HasField("error")  # the reference's "not found" reply, not it again


async def test_logs_pushed_through_one_replica_stream_through_another_until_the_run_ends(
    postgres_url: str, tmp_path: Path
) -> None:
    """``flwr log --stream`` through B shows every line the ServerApp pushed through A, in
    order, none lost, and ends when the run finishes (A reports it)."""
    a, b = replica(tmp_path, "link-a", postgres_url), replica(tmp_path, "link-b", postgres_url)
    lines = [f"round {number}\n" for number in range(20)]
    async with SuperLink(a), SuperLink(b):
        run_id = await start_run(a)
        await claim_and_run(a, run_id)
        streamed: list[str] = []
        ended = anyio.Event()

        async def stream_through_b() -> None:
            with channel(b.exec_api_address) as exec_b:
                request = exec_pb2.StreamLogsRequest(run_id=run_id, after_timestamp=0.0)
                async with exec_grpc.ExecStub(exec_b).StreamLogs.open() as stream:
                    await stream.send_message(request, end=True)
                    async for response in stream:
                        streamed.append(response.log_output)
            ended.set()

        with channel(a.serverappio_api_address) as appio_a:
            serverapp = serverappio_grpc.ServerAppIoStub(appio_a)
            async with anyio.create_task_group() as group:
                group.start_soon(stream_through_b)
                for start in range(0, len(lines), 4):  # as flwr-serverapp: a few lines a push
                    await serverapp.PushLogs(
                        log_pb2.PushLogsRequest(run_id=run_id, logs=lines[start : start + 4])
                    )
                    await anyio.sleep(0.05)
                await set_status(serverapp, run_id, "finished", "completed")
                with anyio.fail_after(5):
                    await ended.wait()
    assert "".join(streamed) == "".join(lines)


async def test_stop_through_one_replica_ends_the_serverapp_another_replica_launched(
    postgres_url: str, tmp_path: Path
) -> None:
    """``flwr stop`` through B of a run whose ServerApp is A's child: the run is stopped and
    A ends that child within a few seconds (A hears B's write and reads its children's runs)."""
    note = tmp_path / "claims"
    a = launching(replica(tmp_path, "link-a", postgres_url), note)
    b = replica(tmp_path, "link-b", postgres_url)
    async with SuperLink(a), SuperLink(b):
        run_id = await start_run(b)
        await eventually(lambda: bool(claims(note)), CLAIM_SECONDS)
        ((claimed, pid, address),) = claims(note)
        assert (claimed, address) == (run_id, a.serverappio_api_address)
        with channel(b.exec_api_address) as exec_b:
            await exec_grpc.ExecStub(exec_b).StopRun(exec_pb2.StopRunRequest(run_id=run_id))
        await eventually(lambda: process_gone(pid), seconds=3.0)
        with channel(a.exec_api_address) as exec_a:
            listed = await exec_grpc.ExecStub(exec_a).ListRuns(
                exec_pb2.ListRunsRequest(run_id=run_id)
            )
        assert listed.run_dict[run_id].status.sub_status == "stopped"


async def test_replicas_started_together_claim_each_pending_run_exactly_once_in_order(
    postgres_url: str, database: LinkState, tmp_path: Path
) -> None:
    """Three ``--isolation subprocess`` replicas start at once on five pending runs: each
    run gets exactly one ServerApp process, owned by the replica whose child claimed it. Runs
    start in FIFO order: each replica's in queue order, and a run starts after all but at
    most two (the other replicas' reservations) of the runs queued before it."""
    fab = make_fab()
    await fab_store_for(postgres_url, database, tmp_path).put(fab)
    fab_hash = hashlib.sha256(fab).hexdigest()
    queued = [
        await database.create_run("tester/demo", "1.0.0", fab_hash, {}, ConfigRecord())
        for _ in range(5)
    ]
    note = tmp_path / "claims"
    configs = [
        launching(replica(tmp_path, name, postgres_url), note)
        for name in ("link-a", "link-b", "link-c")
    ]
    all_claimed = anyio.Event()

    async def serve(config: Config) -> None:
        async with SuperLink(config):
            await all_claimed.wait()

    async with anyio.create_task_group() as group:
        for config in configs:
            group.start_soon(serve, config)
        await eventually(lambda: len(claims(note)) >= len(queued), CLAIM_SECONDS)
        await anyio.sleep(LEASE)  # time for a wrong second claim or an extra child to show
        noted = claims(note)
        children = stand_in_children()
        runs = {run_id: await database.get_run(run_id) for run_id in queued}
        all_claimed.set()
    assert sorted(run_id for run_id, _, _ in noted) == sorted(queued)
    assert sorted(children) == sorted(pid for _, pid, _ in noted)  # no child left waiting
    replica_of = {config.serverappio_api_address: config.replica_id for config in configs}
    for run_id, _, address in noted:
        run = runs[run_id]
        assert run is not None
        assert (run.status.status, run.owner) == ("running", replica_of[address])
    for address in replica_of:
        mine = [queued.index(run_id) for run_id, _, noted_by in noted if noted_by == address]
        assert mine == sorted(mine)
    started = sorted(queued, key=lambda run_id: starting_at(runs[run_id]))
    for position, run_id in enumerate(queued):
        assert started.index(run_id) >= position - (len(configs) - 1)


def starting_at(run: RunRecord | None) -> str:
    assert run is not None and run.starting_at
    return run.starting_at


def stand_in_children() -> list[int]:
    """Process ids of the stand-in ServerApps running under this test process."""
    return [info.pid for info in descendants(os.getpid()) if str(STAND_IN) in info.cmdline]


async def test_a_dead_replicas_runs_fail_naming_it_once_its_lease_lapses(
    postgres_url: str, database: LinkState, tmp_path: Path, log_records: list[logging.LogRecord]
) -> None:
    """A replica that stops renewing (here: its state closed without hand-over, as after
    ``kill -9``) is reaped by another within the lease plus the reaper's renew interval: its
    running run fails naming it, the run it had reserved goes back to the queue."""
    b = replica(tmp_path, "link-b", postgres_url)
    async with SuperLink(b):
        async with open_state(postgres_url) as dead:
            last_renewal = time.monotonic()  # at most: the lease starts in the call
            await dead.register_replica("link-dead", LEASE, "unused")
            running = await dead.create_run("a/b", "1.0", "", {}, ConfigRecord())
            assert await dead.claim_pending_run("link-dead") is not None
            await dead.update_run_status(running, RunStatus("running"))
            reserved = await dead.create_run("a/b", "1.0", "", {}, ConfigRecord())
            assert await dead.reserve_pending_run("link-dead") == reserved
        with anyio.fail_after(LEASE + LEASE / 4 + SLACK):
            while True:
                if (await status_of(database, running)).status == "finished":
                    break
                await anyio.sleep(0.02)
        failover = time.monotonic() - last_renewal
        assert await status_of(database, running) == RunStatus(
            "finished", "failed", lost_run_details("link-dead")
        )
        assert failover >= LEASE
        claimed = await database.claim_pending_run("link-c")
        assert claimed is not None and claimed.run_id == reserved
    assert (
        "SuperLink replica link-dead was lost (its lease expired): failed run(s) "
        f"[{running}], run(s) back in the queue [{reserved}]"
    ) in [record.getMessage() for record in log_records]


async def test_a_replica_shutting_down_hands_its_runs_over_at_once(
    postgres_url: str, database: LinkState, tmp_path: Path
) -> None:
    """Closing A fails A's running run before the block is left (no lease wait), and the
    pending run A had reserved goes to B, whose scheduler launches a ServerApp for it
    straight away (B hears A's hand-over)."""
    note = tmp_path / "claims"
    a = replica(tmp_path, "link-a", postgres_url)
    b = launching(replica(tmp_path, "link-b", postgres_url), note)
    a_serving, close_a, a_closed = anyio.Event(), anyio.Event(), anyio.Event()

    async def serve_a() -> None:
        async with SuperLink(a):
            a_serving.set()
            await close_a.wait()
        a_closed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(serve_a)
        await a_serving.wait()
        running = await start_run(a)
        await claim_and_run(a, running)
        reserved = await start_run(a)
        assert await database.reserve_pending_run("link-a") == reserved  # A's next child's
        async with SuperLink(b):
            await anyio.sleep(2 * LEASE)
            assert claims(note) == []  # B cannot take A's reserved run while A holds it
            close_a.set()
            await a_closed.wait()
            assert await status_of(database, running) == RunStatus(
                "finished", "failed", shutdown_run_details("link-a")
            )
            await eventually(lambda: bool(claims(note)), CLAIM_SECONDS)
            ((claimed, _, address),) = claims(note)
            assert (claimed, address) == (reserved, b.serverappio_api_address)


async def test_a_database_outage_neither_crashes_the_lease_nor_holds_up_the_shutdown(
    tmp_path: Path, log_records: list[logging.LogRecord]
) -> None:
    """While the database is down the lease task logs and retries (the SuperLink keeps
    serving, no code-100 exit); it renews again once the database is back. A shutdown
    during an outage hands over within the handover stage's bound. (A server of the test's
    own: it is stopped.)"""
    with running_postgres_server() as server:
        config = replica(tmp_path, "link-a", server.url())
        async with SuperLink(config) as link:
            await anyio.to_thread.run_sync(server.stop)
            await eventually(lambda: cannot_renew(log_records), seconds=10 * LEASE)
            await anyio.to_thread.run_sync(server.start)
            await wait_for_renewal(link.state, "link-a", after=time.time())
            await anyio.to_thread.run_sync(server.stop)
    assert stage_took(log_records, HANDOVER) <= HANDOVER.bound + SLACK
    assert any(
        "SuperLink replica link-a could not hand over its runs" in record.getMessage()
        for record in log_records
    )


def cannot_renew(records: list[logging.LogRecord]) -> bool:
    return any(
        record.getMessage().startswith("Cannot renew the lease of SuperLink replica link-a")
        for record in records
    )


async def wait_for_renewal(state: LinkState, replica_id: str, after: float) -> None:
    """Until the replica's lease lapses later than a renewal after ``after`` would make it."""
    with anyio.fail_after(10):
        while True:
            with contextlib.suppress(StateUnavailableError):  # the pool reconnecting
                if (await state.get_replica_leases()).get(replica_id, 0.0) > after + LEASE / 2:
                    return
            await anyio.sleep(0.1)
