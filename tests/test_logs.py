"""Log formats: the reference's console lines by default, JSON lines on request."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from superlink_async.logs import configure_logging, logger
from superlink_async.services.fleet import FleetService
from superlink_async.state import open_state
from superlink_async.state.fab_store import DirectoryFabStore
from superlink_async.wire import fleet_pb2


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    saved = (logger.handlers[:], logger.level, logger.propagate)
    stream = io.StringIO()
    yield stream
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.anyio
async def test_json_lines_carry_the_node_id(captured: io.StringIO, tmp_path: Path) -> None:
    configure_logging("INFO", captured, log_format="json")
    async with open_state(":flwr-in-memory-state:") as state:
        response = await FleetService(state, DirectoryFabStore(tmp_path)).create_node(
            fleet_pb2.CreateNodeRequest(ping_interval=30)
        )
    entries = [json.loads(line) for line in captured.getvalue().splitlines()]
    created = entries[-1]
    assert created["message"] == f"[Fleet.CreateNode] Created node_id={response.node.node_id}"
    assert created["node_id"] == response.node.node_id
    assert created["level"] == "INFO" and created["time"].endswith("+00:00")


def test_default_format_is_the_references(captured: io.StringIO) -> None:
    configure_logging("INFO", captured)
    logger.warning("careful")
    assert captured.getvalue() == "\033[93mWARNING \033[0m:   careful\n"


def test_level_filters_and_flwr_log_level_is_the_default(
    captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLWR_LOG_LEVEL", "WARNING")
    configure_logging(None, captured)
    logger.info("hidden")
    assert captured.getvalue() == ""
    assert logger.level == logging.WARNING


def test_json_lines_carry_the_replica_id_and_console_lines_stay_the_references(
    captured: io.StringIO,
) -> None:
    """Each JSON line names the replica that wrote it, so replicas' logs can be collected in
    one place; the default console line is unchanged (the reference's, no replica id)."""
    configure_logging("INFO", captured, log_format="json", replica="link-a")
    logger.info("served")
    assert json.loads(captured.getvalue())["replica"] == "link-a"
    console = io.StringIO()
    configure_logging("INFO", console, replica="link-a")
    logger.info("served")
    assert console.getvalue() == "\033[92mINFO \033[0m:      served\n"
