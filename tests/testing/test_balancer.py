"""HAProxy in front of real SuperLink processes, as the replica tests and the docs run it.

Each call of one client connection is balanced on its own (a gRPC call is an HTTP/2 stream),
a replica is in rotation only while its ``grpc.health.v1`` service answers SERVING (not
merely while its port is open), and a machine without HAProxy gets one line saying how to
install it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from superlink_async.testing import LocalFederation, our_superlink_command
from superlink_async.testing import balancer as balancer_module
from superlink_async.testing.balancer import (
    SERVING_REPLY,
    UP,
    Balancer,
    BalancerUnavailableError,
    find_haproxy,
    health_check_request,
)
from superlink_async.testing.postgres import running_postgres_server

CALLS = 10
#: Two failed checks a second apart take a replica out; allow for a loaded machine.
LEAVES_ROTATION = 15.0


def replica(workdir: Path, *args: str) -> LocalFederation:
    """One of our SuperLinks with no SuperNode and no ServerApp children, started."""
    federation = LocalFederation(
        workdir,
        our_superlink_command(),
        num_supernodes=0,
        superlink_args=["--isolation", "process", *args],
    )
    federation.start()
    return federation


def fleet_address(federation: LocalFederation) -> str:
    return federation.ports.address(federation.ports.fleet)


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[list[LocalFederation]]:
    replicas = [replica(tmp_path / name) for name in ("r1", "r2")]
    try:
        yield replicas
    finally:
        for each in replicas:
            each.close()


async def check_health(address: str, calls: int) -> list[int]:
    """``calls`` health checks over one client connection; the statuses answered."""
    host, _, port = address.rpartition(":")
    with closing(Channel(host, int(port))) as channel:
        stub = HealthStub(channel)
        return [(await stub.Check(HealthCheckRequest())).status for _ in range(calls)]


def test_each_call_of_one_connection_goes_to_the_next_replica(
    haproxy: Path, two_replicas: list[LocalFederation], tmp_path: Path
) -> None:
    """Ten calls over one connection: HAProxy sends them alternately to both replicas, each
    answered SERVING."""
    servers = {f"r{index}": fleet_address(each) for index, each in enumerate(two_replicas, 1)}
    with Balancer(tmp_path / "haproxy", {"fleet": servers}) as balancer:
        statuses = anyio.run(check_health, balancer.address("fleet"), CALLS)
        assert statuses == [HealthCheckResponse.SERVING] * CALLS
        assert balancer.requests() == {("fleet", "r1"): CALLS // 2, ("fleet", "r2"): CALLS // 2}
        routes = [route for route in balancer.routes() if route.frontend == "fleet"]
    assert len({route.client for route in routes}) == 1
    served = [route.server for route in routes]
    assert all(a != b for a, b in itertools.pairwise(served)), served
    assert Counter(route.path for route in routes) == {"/grpc.health.v1.Health/Check": CALLS}


def test_a_replica_whose_database_is_down_leaves_the_rotation(
    haproxy: Path, tmp_path: Path
) -> None:
    """A replica still listening but NOT_SERVING (its PostgreSQL stopped) is taken out by the
    health check, and back in once the database is back."""
    with running_postgres_server() as database:
        link = replica(tmp_path / "r1", "--database", database.url())
        try:
            servers = {"r1": fleet_address(link)}
            with Balancer(tmp_path / "haproxy", {"fleet": servers}) as balancer:
                database.stop()
                balancer.wait_for_status("DOWN", LEAVES_ROTATION)
                assert link.require_superlink().alive()
                database.start()
                balancer.wait_for_status(UP, LEAVES_ROTATION)
        finally:
            link.close()


def test_the_health_check_is_one_grpc_health_call() -> None:
    """The bytes HAProxy sends are an HTTP/2 connection preface, a SETTINGS frame, and the
    Check call ending its stream; SERVING is the answer's serialized message."""
    request = health_check_request()
    assert request.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert b"/grpc.health.v1.Health/Check" in request
    assert request.endswith(bytes([0, 0, 5, 0, 1, 0, 0, 0, 1]) + b"\x00" * 5)
    reply = HealthCheckResponse(status=HealthCheckResponse.SERVING).SerializeToString()
    assert b"\x00" + len(reply).to_bytes(4, "big") + reply == SERVING_REPLY


def test_without_haproxy_one_line_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(balancer_module, "DEBIAN_HAPROXY", tmp_path / "haproxy")
    with pytest.raises(BalancerUnavailableError) as caught:
        find_haproxy()
    assert "apt-get install haproxy" in str(caught.value)
    assert "\n" not in str(caught.value)
