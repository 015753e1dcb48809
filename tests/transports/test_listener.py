"""Out of file descriptors: the listeners pause quietly and open connections are still served.

The real command runs with RLIMIT_NOFILE soft 64 / hard 160 (it raises the soft limit to
the hard one and logs it); the test then opens more connections than it has descriptors.
The gRPC listener (grpc-rere) and the aiohttp one (REST) must each log one WARNING for
the episode and no traceback, answer health on a connection opened before, count the
pauses in ``superlink_accept_paused_total``, and accept again once connections close.
"""

from __future__ import annotations

import re
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import aiohttp
import pytest
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from prometheus_client.parser import text_string_to_metric_families

from tests.polling import eventually
from tests.ports import free_port

pytestmark = pytest.mark.anyio

SOFT, HARD = 64, 160
#: More connections than the server has descriptors.
FLOOD = HARD + 40
WARNING = "is out of file descriptors"


def limited() -> None:
    """In the child, before exec: few descriptors, soft below hard."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


@contextmanager
def server(tmp_path: Path, fleet_api_type: str) -> Iterator[tuple[int, int, Path]]:
    """The command on free ports: (fleet port, metrics port, stderr file); SIGTERM at the end."""
    fleet, metrics = free_port(), free_port()
    stderr = tmp_path / "stderr.txt"
    command = [
        sys.executable,
        "-m",
        "superlink_async",
        "--insecure",
        "--isolation",
        "process",
        "--fleet-api-type",
        fleet_api_type,
        "--fleet-api-address",
        f"127.0.0.1:{fleet}",
        "--exec-api-address",
        f"127.0.0.1:{free_port()}",
        "--serverappio-api-address",
        f"127.0.0.1:{free_port()}",
        "--metrics-address",
        f"127.0.0.1:{metrics}",
        "--storage-dir",
        str(tmp_path / "ffs"),
    ]
    with stderr.open("w") as sink:
        process = subprocess.Popen(command, stderr=sink, preexec_fn=limited)  # noqa: PLW1509
    try:
        yield fleet, metrics, stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, stderr.read_text()


def flood(port: int) -> list[socket.socket]:
    """Connect FLOOD times (the kernel completes them; the server accepts what it can)."""
    sockets = []
    for _ in range(FLOOD):
        sock = socket.socket()
        sock.connect(("127.0.0.1", port))
        sockets.append(sock)
    return sockets


async def grpc_health(channel: Channel) -> int:
    response = await HealthStub(channel).Check(HealthCheckRequest(), timeout=5)
    return response.status


async def pauses(metrics_port: int) -> float:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
    ):
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "superlink_accept_paused_total"
    )


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def assert_one_quiet_episode(stderr: Path, soft_raised: bool = True) -> None:
    log = stderr.read_text()
    assert "Traceback" not in log
    assert "socket.accept() out of system resource" not in log
    assert len(re.findall(WARNING, log)) == 1, log
    assert "accepts connections again" in log
    if soft_raised:
        assert f"File descriptors: at most {HARD} (soft limit raised from {SOFT})" in log


async def test_grpc_listener_pauses_and_keeps_serving_open_connections(tmp_path: Path) -> None:
    with server(tmp_path, "grpc-rere") as (fleet, metrics, stderr):
        await eventually(lambda: listening(metrics), 30)
        with closing(Channel("127.0.0.1", fleet)) as established:
            assert await grpc_health(established) == HealthCheckResponse.SERVING
            sockets = flood(fleet)
            await eventually(lambda: WARNING in stderr.read_text(), 30)
            assert await grpc_health(established) == HealthCheckResponse.SERVING
            for sock in sockets:
                sock.close()
            await eventually(lambda: "accepts connections again" in stderr.read_text(), 30)
        with closing(Channel("127.0.0.1", fleet)) as fresh:
            assert await grpc_health(fresh) == HealthCheckResponse.SERVING
        assert await pauses(metrics) >= 1
    assert_one_quiet_episode(stderr)


async def test_rest_listener_pauses_and_keeps_serving_open_connections(tmp_path: Path) -> None:
    with server(tmp_path, "rest") as (fleet, metrics, stderr):
        await eventually(lambda: listening(metrics), 30)
        connector = aiohttp.TCPConnector(limit=1)  # one kept-alive connection
        async with aiohttp.ClientSession(connector=connector) as established:
            url = f"http://127.0.0.1:{fleet}/health"
            async with established.get(url) as response:
                assert response.status == 200
            sockets = flood(fleet)
            await eventually(lambda: WARNING in stderr.read_text(), 30)
            async with established.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                assert response.status == 200
            for sock in sockets:
                sock.close()
            await eventually(lambda: "accepts connections again" in stderr.read_text(), 30)
        async with aiohttp.ClientSession() as fresh, fresh.get(url) as response:
            assert response.status == 200
        assert await pauses(metrics) >= 1
    assert_one_quiet_episode(stderr)
