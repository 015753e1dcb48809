"""The staged shutdown: calls in flight finish during the drain, those past the grace are
cut off, the stages run in the table's order, each within its bound, and a SIGTERMed
process exits within the grace plus the later stages' bounds (Docker kills after 10 s)."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import cast

import anyio
import pytest
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError

from superlink_async import Config, SuperLink
from superlink_async.config import ISOLATION_SUBPROCESS, Address
from superlink_async.runtime.shutdown import (
    BOUND_AFTER_DRAIN,
    CHILDREN,
    DRAIN,
    LISTENERS,
    STAGES,
    Stage,
)
from superlink_async.testing import (
    ManagedProcess,
    flower_env,
    our_superlink_command,
    wait_for_port,
)
from superlink_async.wire import exec_grpc, exec_pb2, fleet_pb2
from superlink_async.wire.fab_pb2 import Fab
from tests.fabs import make_fab
from tests.polling import eventually
from tests.ports import free_port, loopback, loopback_config

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
REST_HEADERS = {"Content-Type": "application/protobuf", "Accept": "application/protobuf"}
CREATE_NODE = fleet_pb2.CreateNodeRequest(ping_interval=30).SerializeToString()
#: What scheduling on a shared 2-CPU machine may add to a measured bound.
SLACK = 0.5


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """gRPC Fleet and REST Fleet side by side, with a grace long enough to finish calls in."""
    return loopback_config(
        tmp_path,
        fleet_api_type="grpc-rere,rest",
        fleet_api_address=f"{loopback()},{loopback()}",
        shutdown_grace=5.0,
    )


def rest_address(config: Config) -> Address:
    return config.fleet_listeners()[1].address


async def slow_list_runs(address: str, send_body: anyio.Event | None) -> exec_pb2.ListRunsResponse:
    """An Exec call that is admitted at once (its headers) but sends its message once
    ``send_body`` is set (None: never)."""
    parsed = Address.parse(address)
    with closing(Channel(parsed.host, parsed.port)) as channel:
        async with exec_grpc.ExecStub(channel).ListRuns.open() as stream:
            await stream.send_request()
            if send_body is not None:
                await send_body.wait()
                await stream.send_message(exec_pb2.ListRunsRequest(), end=True)
            reply = await stream.recv_message()
            assert reply is not None
            return reply


async def slow_create_node(address: Address, send_body: anyio.Event | None) -> bytes:
    """A REST call that sends its headers and a byte of its body, the rest once
    ``send_body`` is set (None: never); what the server answered before it closed the
    connection."""
    async with await anyio.connect_tcp(address.host, address.port) as client:
        await client.send(rest_request_start(address) + CREATE_NODE[:1])
        if send_body is not None:
            await send_body.wait()
            await client.send(CREATE_NODE[1:])
        answer = b""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                answer += await client.receive()
        return answer


def rest_request_start(address: Address) -> bytes:
    """The head of a REST CreateNode request; the server closes the connection after it."""
    headers = "".join(f"{name}: {value}\r\n" for name, value in REST_HEADERS.items())
    return (
        f"POST /api/v0/fleet/create-node HTTP/1.1\r\nHost: {address}\r\n{headers}"
        f"Content-Length: {len(CREATE_NODE)}\r\nConnection: close\r\n\r\n"
    ).encode()


async def test_calls_in_flight_finish_during_the_drain(
    config: Config, log_records: list[logging.LogRecord]
) -> None:
    """A gRPC and a REST call under way when the block ends get their answers; the drain
    ends as soon as they are done, not at the grace."""
    results: dict[str, object] = {}
    send_bodies = anyio.Event()

    async def call(name: str, function: Callable[..., object], *args: object) -> None:
        results[name] = await function(*args)  # type: ignore[misc]

    async with anyio.create_task_group() as clients:
        async with SuperLink(config) as link:
            clients.start_soon(call, "grpc", slow_list_runs, config.exec_api_address, send_bodies)
            clients.start_soon(call, "rest", slow_create_node, rest_address(config), send_bodies)
            await eventually(lambda: link._gate.in_flight == 2, 5)
            clients.start_soon(release_when_draining, link, send_bodies)
            leaving = time.monotonic()
        took = time.monotonic() - leaving
    assert dict(cast(exec_pb2.ListRunsResponse, results["grpc"]).run_dict) == {}
    head, _, body = cast(bytes, results["rest"]).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert fleet_pb2.CreateNodeResponse.FromString(body).node.node_id > 1
    assert took < config.shutdown_grace
    assert not [record for record in log_records if "still in flight" in record.getMessage()]


async def release_when_draining(link: SuperLink, send_bodies: anyio.Event) -> None:
    await eventually(lambda: link._gate.draining, 5)
    await anyio.sleep(0.2)  # well into the drain
    send_bodies.set()


async def test_calls_past_the_grace_are_cut_off_within_the_later_bounds(
    config: Config, log_records: list[logging.LogRecord]
) -> None:
    """Calls that never finish hold the exit for the grace and the later stages' bounds,
    no longer: the gRPC call is cancelled, the REST connection closed without an answer."""
    config = replace(config, shutdown_grace=0.5)
    outcomes: dict[str, object] = {}

    async def cut_off(name: str, function: Callable[..., object], *args: object) -> None:
        try:
            outcomes[name] = await function(*args)  # type: ignore[misc]
        except (GRPCError, StreamTerminatedError) as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as clients:
        async with SuperLink(config) as link:
            clients.start_soon(cut_off, "grpc", slow_list_runs, config.exec_api_address, None)
            clients.start_soon(cut_off, "rest", slow_create_node, rest_address(config), None)
            await eventually(lambda: link._gate.in_flight == 2, 5)
            leaving = time.monotonic()
        took = time.monotonic() - leaving
    assert config.shutdown_grace <= took <= config.shutdown_grace + BOUND_AFTER_DRAIN
    assert isinstance(outcomes["grpc"], (GRPCError, StreamTerminatedError))
    assert outcomes["rest"] == b""  # closed without an answer
    assert "2 call(s) still in flight after 0.5s; closing anyway" in [
        record.getMessage() for record in log_records
    ]
    assert stage_took(log_records, LISTENERS) <= LISTENERS.bound + SLACK


async def test_the_stages_run_in_the_tables_order(
    config: Config, log_records: list[logging.LogRecord]
) -> None:
    async with SuperLink(replace(config, signature_workers=1)):
        pass
    started = [
        match.group(1)
        for record in log_records
        if (match := re.fullmatch(r"Shutdown stage \d/6 '(\w+)' .*", record.getMessage()))
    ]
    assert started == [stage.name for stage in STAGES]
    assert [stage.name for stage in STAGES] == [
        "drain",
        "children",
        "handover",
        "listeners",
        "workers",
        "state",
    ]


def stage_took(records: list[logging.LogRecord], stage: Stage) -> float:
    """The seconds the stage's closing log line reports."""
    for record in records:
        if match := re.fullmatch(
            rf"Shutdown stage '{stage.name}' took ([0-9.]+)s", record.getMessage()
        ):
            return float(match.group(1))
    raise AssertionError(f"no log line for the {stage.name} stage")


#: A stand-in for flwr-serverapp: on SIGTERM it notes whether ServerAppIo still listens.
CHILD = """
import signal, socket, sys, time
from pathlib import Path
from typing import cast

note = Path(sys.argv[1])
host, port = sys.argv[sys.argv.index("--serverappio-api-address") + 1].rsplit(":", 1)

def on_sigterm(signum, frame):
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        note.write_text("listening")
    except OSError:
        note.write_text("closed")
    if sys.argv[2] == "polite":
        sys.exit(0)

signal.signal(signal.SIGTERM, on_sigterm)
note.write_text("started")
while True:
    time.sleep(0.1)
"""


@pytest.mark.parametrize("manners", ["polite", "stubborn"])
async def test_children_end_before_the_listeners_close_and_within_their_bound(
    config: Config, tmp_path: Path, manners: str, log_records: list[logging.LogRecord]
) -> None:
    """A child is sent SIGTERM while ServerAppIo still listens; one that ignores it is
    SIGKILLed at the children stage's bound."""
    script, note = tmp_path / "child.py", tmp_path / "child.note"
    script.write_text(CHILD)
    config = replace(
        config,
        isolation=ISOLATION_SUBPROCESS,
        serverapp_command=(sys.executable, str(script), str(note), manners),
    )
    async with SuperLink(config):
        parsed = Address.parse(config.exec_api_address)
        with closing(Channel(parsed.host, parsed.port)) as channel:
            await exec_grpc.ExecStub(channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
            )
        await eventually(lambda: note.exists() and note.read_text() == "started", 10)
    assert note.read_text() == "listening"
    took = stage_took(log_records, CHILDREN)
    if manners == "polite":
        assert took < CHILDREN.bound
    else:
        assert CHILDREN.bound <= took <= CHILDREN.bound + SLACK


def test_sigterm_during_a_stalled_rest_call_exits_within_the_grace_and_the_bounds(
    tmp_path: Path,
) -> None:
    """``python -m superlink_async`` with the default grace, a REST client stalled in the
    middle of its request body, then SIGTERM (``docker stop``): status 0, after the grace
    and within the later stages' bounds (it took 65 s while aiohttp kept its own 60 s)."""
    grace = Config.shutdown_grace
    rest = free_port()
    argv = [
        *our_superlink_command(),
        "--insecure",
        "--isolation",
        "process",
        "--fleet-api-type",
        "rest",
        "--fleet-api-address",
        f"127.0.0.1:{rest}",
        "--exec-api-address",
        loopback(),
        "--serverappio-api-address",
        loopback(),
        "--storage-dir",
        str(tmp_path / "ffs"),
    ]
    process = ManagedProcess(
        "superlink", argv, tmp_path / "superlink.log", flower_env(tmp_path / "home"), ROOT
    )
    try:
        wait_for_port(rest, 30, alive=process.alive)
        with socket.create_connection(("127.0.0.1", rest)) as client:
            client.sendall(rest_request_start(Address("127.0.0.1", rest)) + CREATE_NODE[:1])
            time.sleep(0.5)  # the server admits the call and waits for the rest of its body
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status = process.wait(grace + BOUND_AFTER_DRAIN + 5)
            took = time.monotonic() - signalled
        output = process.output()
    finally:
        process.close()
    assert status == 0, output
    assert grace <= took <= grace + BOUND_AFTER_DRAIN, output
    assert "1 call(s) still in flight after 5.0s; closing anyway" in output
    assert "SuperLink terminated gracefully." in output


def test_the_operations_guide_shows_the_table_the_code_runs() -> None:
    """docs/operations.md's stage table is the code's: same stages, order, bounds, words."""
    text = (ROOT / "docs" / "operations.md").read_text()
    rows = re.findall(r"^\| (\d)\. (\w+) \| (.+?) \| (.+) \|$", text, re.MULTILINE)
    assert [(int(number), name, ends) for number, name, _, ends in rows] == [
        (number, stage.name, stage.ends) for number, stage in enumerate(STAGES, 1)
    ]
    assert [bound for *_, bound, _ in rows] == [documented_bound(stage) for stage in STAGES]
    assert f"within the grace plus {BOUND_AFTER_DRAIN:g} s" in text


def documented_bound(stage: Stage) -> str:
    if stage is DRAIN:
        return f"`--shutdown-grace` (default {Config.shutdown_grace:g} s)"
    return "not cut short" if math.isinf(stage.bound) else f"{stage.bound:g} s"
