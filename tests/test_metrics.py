"""The Prometheus endpoint: every documented series is there, and values move with use."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from grpclib.client import Channel
from prometheus_client.parser import text_string_to_metric_families

from superlink_async import SuperLink
from superlink_async.config import Address
from superlink_async.wire import exec_grpc, exec_pb2, fleet_grpc, fleet_pb2
from superlink_async.wire.fab_pb2 import Fab
from tests.fabs import make_fab
from tests.node_keys import NodeKey
from tests.ports import loopback, loopback_config

pytestmark = pytest.mark.anyio


async def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{address}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_series_exist_and_move_during_a_flow(tmp_path: Path) -> None:
    metrics_address = loopback()
    config = loopback_config(tmp_path, metrics_address=metrics_address)
    async with SuperLink(config):
        before = await scrape(metrics_address)
        assert before[("superlink_nodes_registered", ())] == 0
        assert before[("superlink_serverapp_processes", ())] == 0
        fleet = Address.parse(config.fleet_api_address or "")
        with closing(Channel(fleet.host, fleet.port)) as channel:
            await fleet_grpc.FleetStub(channel).CreateNode(
                fleet_pb2.CreateNodeRequest(ping_interval=30),
                metadata=NodeKey().metadata(time.time()),
            )
        exec_address = Address.parse(config.exec_api_address)
        with closing(Channel(exec_address.host, exec_address.port)) as channel:
            await exec_grpc.ExecStub(channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
            )
        after = await scrape(metrics_address)
    assert after[("superlink_nodes_registered", ())] == 1
    assert after[("superlink_nodes_online", ())] == 1
    assert after[("superlink_runs", (("status", "pending"),))] == 1
    for name in (
        "superlink_messages_waiting",
        "superlink_messages_in_flight",
        "superlink_replies_stored",
        "superlink_messages_expired",
        "superlink_serverapp_launches_total",
        "superlink_serverapp_launch_failures_total",
    ):
        assert (name, ()) in after
    created = (
        "superlink_rpc_requests_total",
        (("api", "Fleet"), ("code", "OK"), ("method", "CreateNode")),
    )
    assert after[created] == 1
    timed = ("superlink_rpc_duration_seconds_count", (("api", "Exec"), ("method", "StartRun")))
    assert after[timed] == 1
    state_ops = (
        "superlink_state_operation_duration_seconds_count",
        (("operation", "create_keyed_node"),),
    )
    assert after[state_ops] == 1


async def test_the_replica_and_the_leases_held_are_series(tmp_path: Path) -> None:
    """``superlink_replica_info`` names this process's replica id; ``superlink_replicas``
    counts the leases held in the state (here only this one: the in-memory state is this
    process's own). The replica's state calls are timed; ``listen``, which runs until
    shutdown, is not."""
    metrics_address = loopback()
    config = loopback_config(tmp_path, metrics_address=metrics_address, replica_id="link-a")
    async with SuperLink(config):
        scraped = await scrape(metrics_address)
    assert scraped[("superlink_replica_info", (("replica", "link-a"),))] == 1
    assert scraped[("superlink_replicas", ())] == 1
    operations = {
        dict(labels)["operation"]
        for name, labels in scraped
        if name == "superlink_state_operation_duration_seconds_count"
    }
    assert {"register_replica", "get_replica_leases"} <= operations
    assert "listen" not in operations


async def test_the_database_pool_is_a_series_on_postgresql_only(
    tmp_path: Path, postgres_url: str
) -> None:
    """How full the pool is and how long operations waited for a connection, so an operator
    can tell calls queueing for the pool from a slow database (``--database-pool-size``).
    Memory and SQLite have no pool, so no such series."""
    metrics_address = loopback()
    config = loopback_config(
        tmp_path, metrics_address=metrics_address, database=postgres_url, database_pool_size=7
    )
    async with SuperLink(config):
        scraped = await scrape(metrics_address)
    assert scraped[("superlink_database_connections_max", ())] == 7
    open_connections = scraped[("superlink_database_connections", (("state", "open"),))]
    assert 1 <= open_connections <= 7
    busy_connections = scraped[("superlink_database_connections", (("state", "busy"),))]
    assert 0 <= busy_connections <= open_connections
    assert scraped[("superlink_database_connection_acquisitions_total", ())] > 0
    assert scraped[("superlink_database_connection_wait_seconds_total", ())] >= 0
    memory_address = loopback()
    async with SuperLink(loopback_config(tmp_path, metrics_address=memory_address)):
        in_memory = await scrape(memory_address)
    assert not {name for name, _ in in_memory if name.startswith("superlink_database_")}
