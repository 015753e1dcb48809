"""A full disk under the SQLite backend: UNAVAILABLE, NOT_SERVING, nothing lost, recovery.

The database lives on a real small filesystem, a 16 MiB tmpfs this suite mounts (it runs as
root here), which a ballast file then fills to the last block: the failures are the
kernel's ENOSPC, met wherever SQLite meets them (WAL growth, checkpoints). Where mounting
is not allowed (not root, no CAP_SYS_ADMIN), SQLite's own limit stands in for the disk:
``PRAGMA max_page_count`` set to the current size makes it answer the same SQLITE_FULL
("database or disk is full") to any write that needs a new page (but not to a page
rewritten in place, so health's probe is only pinned on the real filesystem).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpclib import GRPCError, Status

from superlink_async.services.fleet import FleetService
from superlink_async.state.base import LinkState
from superlink_async.state.sqlite import WAL_SIZE_LIMIT, SqliteLinkState
from superlink_async.transports.gate import CallGate
from superlink_async.transports.health import HealthProbe
from superlink_async.transports.rest import PROTOBUF, fleet_rest_app
from superlink_async.wire import fleet_pb2, serverappio_pb2
from superlink_async.wire.message_pb2 import Message
from tests.logged import assert_no_traceback
from tests.services.conftest import Link, open_link

pytestmark = pytest.mark.anyio

PAYLOAD = 256 * 1024


class Volume:
    """Where the database lives, and how to fill and free the space it writes to."""

    def __init__(self, directory: Path, mounted: bool) -> None:
        self.directory = directory
        self.mounted = mounted
        self._ballast = directory / "ballast"

    async def fill(self, state: LinkState) -> None:
        if not self.mounted:
            await _limit_pages(state, None)
            return
        with self._ballast.open("wb", buffering=0) as ballast:
            for chunk in (1 << 20, 4096, 512):
                try:
                    while ballast.write(b"\0" * chunk):
                        pass
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    async def free(self, state: LinkState) -> None:
        if not self.mounted:
            await _limit_pages(state, 1 << 30)
            return
        self._ballast.unlink()


async def _limit_pages(state: LinkState, pages: int | None) -> None:
    """SQLite's page limit on the state's own connection; None: the pages it has now."""
    assert isinstance(state, SqliteLinkState)

    def limit(db: Any) -> None:
        count = db.row("PRAGMA page_count")[0] if pages is None else pages
        db.rows(f"PRAGMA max_page_count = {count}")

    await state._call(limit)


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    directory = tmp_path / "volume"
    directory.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mount.returncode != 0:
        yield Volume(directory, mounted=False)
        return
    try:
        yield Volume(directory, mounted=True)
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


@pytest.fixture
async def link_on_volume(volume: Volume, tmp_path: Path) -> AsyncIterator[Link]:
    async with open_link(str(volume.directory / "state.db"), tmp_path) as link:
        yield link


def with_payload(message: Message) -> Message:
    message.content.configs["weights"].data["blob"].bytes = os.urandom(PAYLOAD)
    return message


async def push(link: Link, run_id: int, node_id: int) -> str:
    response = await link.serverappio.PushMessages(
        serverappio_pb2.PushInsMessagesRequest(
            run_id=run_id, messages_list=[with_payload(link.instruction(run_id, node_id))]
        )
    )
    return response.message_ids[0]


async def push_until_refused(link: Link, run_id: int, node_id: int) -> GRPCError:
    """Writes succeed while SQLite still has room in pages it owns; then one is refused."""
    for _ in range(200):
        try:
            await push(link, run_id, node_id)
        except GRPCError as error:
            return error
    raise AssertionError("the full disk never refused a write")


async def test_a_full_disk_is_unavailable_and_not_serving_until_space_returns(
    volume: Volume, link_on_volume: Link, log_records: list[logging.LogRecord]
) -> None:
    link = link_on_volume
    node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=3600.0))
    node_id = node.node.node_id
    run_id = await link.running_run()
    kept = await push(link, run_id, node_id)
    probe = HealthProbe(link.state, CallGate())
    rest = fleet_rest_app(
        FleetService(link.state, link.fabs, clock=link.clock), CallGate(), probe.healthy
    )
    assert await probe.healthy()

    await volume.fill(link.state)
    error = await push_until_refused(link, run_id, node_id)
    assert (error.status, error.message) == (Status.UNAVAILABLE, "database or disk is full")
    # Health's probe rewrites one page in place: only a real disk refuses that (a page
    # limit refuses new pages only), so NOT_SERVING is pinned where the suite can mount.
    if volume.mounted:
        assert not await probe.healthy()
    async with TestClient(TestServer(rest)) as client:
        if volume.mounted:
            assert (await client.get("/health")).status == 503
        headers = {"Content-Type": PROTOBUF, "Accept": PROTOBUF}
        body = fleet_pb2.CreateNodeRequest(ping_interval=30.0).SerializeToString()
        statuses = set()
        for _ in range(2000):
            response = await client.post("/api/v0/fleet/create-node", data=body, headers=headers)
            statuses.add(response.status)
            if response.status != 200:
                assert await response.text() == "database or disk is full"
                break
        assert statuses <= {200, 503} and 503 in statuses

        await volume.free(link.state)
        assert await probe.healthy()
        assert (await client.get("/health")).status == 200
    await push(link, run_id, node_id)
    pulled = await link.state.pull_message_ins(node_id, limit=1)
    assert [message.metadata.message_id for message in pulled] == [kept]
    assert_no_traceback(log_records)
    assert sum("cannot take writes" in record.getMessage() for record in log_records) == 1


def size_of(path: str) -> int:
    return os.stat(path).st_size


async def test_the_wal_stays_near_its_size_limit(tmp_path: Path) -> None:
    """20 MB written message by message: the WAL is checkpointed and cut back as it goes."""
    path = tmp_path / "state.db"
    async with open_link(str(path), tmp_path) as link:
        node = await link.fleet.CreateNode(fleet_pb2.CreateNodeRequest(ping_interval=3600.0))
        run_id = await link.running_run()
        largest = 0
        for _ in range(80):
            await push(link, run_id, node.node.node_id)
            largest = max(largest, size_of(f"{path}-wal"))
    assert largest <= WAL_SIZE_LIMIT + 2 * PAYLOAD
