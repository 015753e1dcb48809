"""HAProxy in front of several SuperLink replicas: gRPC over cleartext HTTP/2, balanced per call.

A gRPC call is one HTTP/2 stream. In ``mode http`` with ``proto h2`` on both sides, HAProxy
ends the client's connection and balances every stream on its own, so the calls of one
SuperNode connection land on the replicas in turn (TCP balancing would pin a connection, and
with it a SuperNode, to one replica). :func:`render_config` writes the configuration that
``examples/haproxy.cfg`` holds and the tests run; :class:`Balancer` runs it as a process.

The health check is a real ``grpc.health.v1.Health/Check`` call: HAProxy's HTTP checks cannot
send the five zero bytes of an empty gRPC request, so the check sends the HTTP/2 bytes itself
(``tcp-check send-binary``) and a replica is in rotation only while it answers ``SERVING``
(which a replica stops doing when its database is unreachable or it is shutting down).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from superlink_async.testing.processes import (
    LOOPBACK,
    ManagedProcess,
    StartsAndCloses,
    WaitTimeout,
    free_port,
    wait_for,
    wait_for_port,
)

INSTALL_HINT = "install HAProxy, e.g. `apt-get install haproxy`"
#: Where Debian's package puts it (not on a non-root user's PATH).
DEBIAN_HAPROXY = Path("/usr/sbin/haproxy")
#: How long HAProxy gets to listen and to find its servers healthy.
START_TIMEOUT = 30.0
#: Seconds between two health checks of a replica; two failures take it out, two passes back.
CHECK_INTERVAL = 1.0
#: HAProxy's name for a server in rotation.
UP = "UP"


class BalancerUnavailableError(RuntimeError):
    """No HAProxy here; the message says in one line how to install it."""


def find_haproxy() -> Path:
    """The ``haproxy`` program, from PATH or Debian's location."""
    on_path = shutil.which("haproxy")
    if on_path:
        return Path(on_path)
    if DEBIAN_HAPROXY.is_file():
        return DEBIAN_HAPROXY
    raise BalancerUnavailableError(f"no `haproxy` on PATH or at {DEBIAN_HAPROXY}: {INSTALL_HINT}")


# ---------------------------------------------------------------------------------------------
# The health check, as bytes on the wire


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame (RFC 9113 section 4.1)."""
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
    return header + payload


def _literal(value: bytes) -> bytes:
    """An HPACK string literal, not Huffman-coded (shorter than 128 bytes)."""
    return bytes([len(value)]) + value


def health_check_request() -> bytes:
    """A whole cleartext HTTP/2 connection's worth of one ``grpc.health.v1.Health/Check`` call.

    The client preface, an empty SETTINGS frame, the request headers (HPACK: ``:method POST``
    and ``:scheme http`` from the static table, the rest as literals never indexed) and one
    DATA frame with the empty ``HealthCheckRequest`` (service ``""``: the whole server),
    ending the stream.
    """
    headers = (
        b"\x83\x86"  # :method POST, :scheme http
        + b"\x04"
        + _literal(b"/grpc.health.v1.Health/Check")  # :path
        + b"\x01"
        + _literal(b"localhost")  # :authority
        + b"\x0f\x10"
        + _literal(b"application/grpc")  # content-type
        + b"\x00"
        + _literal(b"te")
        + _literal(b"trailers")
    )
    settings, headers_frame, data = 0x4, 0x1, 0x0
    end_headers, end_stream = 0x4, 0x1
    return (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _frame(settings, 0, 0, b"")
        + _frame(headers_frame, end_headers, 1, headers)
        + _frame(data, end_stream, 1, b"\x00" * 5)
    )


#: The reply's DATA payload when the replica serves: an uncompressed 2-byte gRPC message
#: holding ``HealthCheckResponse(status=SERVING)`` (field 1, varint 1).
SERVING_REPLY = b"\x00\x00\x00\x00\x02\x08\x01"


# ---------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True)
class Frontend:
    """One balanced API: where HAProxy listens for it and the replicas' addresses serving it."""

    name: str
    bind: str
    #: Server name (the replica, as HAProxy's logs and stats name it) to its address.
    servers: Mapping[str, str] = field(default_factory=dict)
    #: Or ``<prefix> <count> <name>:<port>``: up to count servers, one per address the DNS
    #: name resolves to (e.g. a Kubernetes headless Service), re-resolved as pods come and go.
    server_template: str = ""


def render_config(
    frontends: Sequence[Frontend], *, stats_bind: str, resolvers: str | None = None
) -> str:
    """The HAProxy configuration balancing each of ``frontends`` over its replicas.

    ``stats_bind`` serves HAProxy's own page (``/stats``, ``/stats;csv``) and Prometheus
    metrics (``/metrics``). ``resolvers`` is where server names are looked up again while
    running (names unknown at start, addresses that change): ``nameserver dns <host:port>``
    (Docker's is ``127.0.0.11:53``) or ``parse-resolv-conf`` (the system's).
    """
    check = health_check_request().hex()
    dns = ""
    if resolvers is not None:
        dns = f"resolvers dns\n    {resolvers}\n    hold valid 5s\n\n"
    server_options = (
        f"default-server proto h2 check inter {CHECK_INTERVAL:g}s fall 2 rise 2 "
        "init-addr last,libc,none" + (" resolvers dns" if resolvers is not None else "")
    )
    sections = [
        _HEADER,
        "global\n"
        "    log stdout format raw local0 info\n"
        "\n" + dns + "defaults\n"
        "    mode http\n"
        "    log global\n"
        "    option httplog\n"
        "    timeout connect 2s\n"
        "    # Idle limits: SuperNodes call every few seconds, `flwr log --stream` may be silent.\n"
        "    timeout client 1h\n"
        "    timeout server 1h\n"
        "    timeout check 2s\n"
        "    # A call that never reached a replica (it just died) is sent to another one.\n"
        "    retries 2\n"
        "    option redispatch\n"
        "    retry-on conn-failure\n"
        "    # In rotation only while grpc.health.v1.Health/Check answers SERVING.\n"
        "    option tcp-check\n"
        "    tcp-check connect\n"
        f"    tcp-check send-binary {check}\n"
        f"    tcp-check expect binary {SERVING_REPLY.hex()}\n"
        f"    {server_options}\n",
    ]
    for frontend in frontends:
        servers = "".join(
            f"    server {name} {address}\n" for name, address in frontend.servers.items()
        )
        if frontend.server_template:
            servers += f"    server-template {frontend.server_template}\n"
        sections.append(
            f"frontend {frontend.name}\n"
            f"    bind {frontend.bind} proto h2\n"
            f"    default_backend {frontend.name}-replicas\n"
            "\n"
            f"backend {frontend.name}-replicas\n"
            "    balance roundrobin\n" + servers
        )
    sections.append(
        "frontend stats\n"
        f"    bind {stats_bind}\n"
        "    http-request use-service prometheus-exporter if { path /metrics }\n"
        "    stats enable\n"
        "    stats uri /stats\n"
    )
    return "\n".join(sections)


_HEADER = """\
# HAProxy in front of superlink-async replicas: gRPC over cleartext HTTP/2, balanced per call.
# Rendered by superlink_async.testing.balancer.render_config, which the tests run; see
# docs/high-availability.md for what each part does.
"""


# ---------------------------------------------------------------------------------------------
# The process


@dataclass(frozen=True)
class Route:
    """One call as HAProxy's log shows it: who made it and which replica served it."""

    client: str
    frontend: str
    server: str
    path: str


#: ``option httplog``'s line: client, accept date, frontend, backend/server, ..., request.
_HTTPLOG = re.compile(r'^(\S+) \[[^\]]+\] (\S+) [^/\s]+/(\S+) .*?"\S+ (\S+) HTTP/2\.0"')


class Balancer(StartsAndCloses):
    """HAProxy on 127.0.0.1 balancing each frontend over the given replica addresses.

    Each frontend maps its name to the replicas' ``host:port`` (by server name); HAProxy
    listens for it on a free port (:meth:`address`). A context manager: HAProxy is gone after.
    """

    def __init__(self, workdir: Path, frontends: Mapping[str, Mapping[str, str]]) -> None:
        self.program = find_haproxy()
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.ports = {name: free_port() for name in frontends}
        self.stats_port = free_port()
        self.frontends = [
            Frontend(name, f"{LOOPBACK}:{self.ports[name]}", dict(servers))
            for name, servers in frontends.items()
        ]
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(
            render_config(self.frontends, stats_bind=f"{LOOPBACK}:{self.stats_port}")
        )
        self.process: ManagedProcess | None = None

    def address(self, frontend: str) -> str:
        """``127.0.0.1:<port>`` where HAProxy serves ``frontend``."""
        return f"{LOOPBACK}:{self.ports[frontend]}"

    def start(self) -> None:
        """Start HAProxy (in the foreground) and wait until every server is in rotation."""
        self.process = ManagedProcess(
            "haproxy",
            [str(self.program), "-db", "-f", str(self.config_path)],
            self.workdir / "haproxy.log",
            os.environ,
            cwd=self.workdir,
        )
        process = self.process
        try:
            for port in (*self.ports.values(), self.stats_port):
                wait_for_port(port, START_TIMEOUT, alive=process.alive)
        except (RuntimeError, WaitTimeout) as exc:
            raise RuntimeError(f"HAProxy did not start: {exc}\n{process.tail()}") from exc
        self.wait_for_status(UP, START_TIMEOUT)

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's statistics, one row per frontend, backend and server (``/stats;csv``)."""
        url = f"http://{LOOPBACK}:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))

    def server_status(self) -> dict[tuple[str, str], str]:
        """(frontend, server) to HAProxy's state of it: ``UP``, ``DOWN``, ``UP 1/2``, ..."""
        return {
            (row["pxname"].removesuffix("-replicas"), row["svname"]): row["status"]
            for row in self.stats()
            if row["svname"] not in ("FRONTEND", "BACKEND") and row["pxname"] != "stats"
        }

    def wait_for_status(
        self, status: str, timeout: float, servers: Sequence[str] | None = None
    ) -> None:
        """Wait until ``servers`` (by name, of any frontend; default: all) are in ``status``."""

        def reached() -> bool:
            return all(
                state == status
                for (_, server), state in self.server_status().items()
                if servers is None or server in servers
            )

        wait_for(reached, timeout, interval=0.2, what=f"HAProxy to see {servers or 'all'} {status}")

    def requests(self) -> dict[tuple[str, str], int]:
        """(frontend, server) to how many calls HAProxy sent that server so far."""
        return {
            (row["pxname"].removesuffix("-replicas"), row["svname"]): int(row["stot"] or 0)
            for row in self.stats()
            if row["svname"] not in ("FRONTEND", "BACKEND") and row["pxname"] != "stats"
        }

    def routes(self) -> list[Route]:
        """Every call logged so far, oldest first."""
        if self.process is None:
            return []
        found = []
        for line in self.process.output().splitlines():
            match = _HTTPLOG.match(line)
            if match is not None:
                client, frontend, server, path = match.groups()
                found.append(Route(client, frontend, server, urlsplit(path).path))
        return found

    def close(self) -> None:
        """Stop HAProxy (SIGTERM, then kill); safe to call twice."""
        if self.process is not None:
            self.process.stop()
            self.process.close()

    def tail(self) -> str:
        """The end of HAProxy's log, for failure reports."""
        return "" if self.process is None else self.process.tail()
