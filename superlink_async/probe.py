"""Health probe for containers: ``python -m superlink_async.probe [--address HOST:PORT]``.

Asks the standard gRPC health service (overall status) and exits 0 when the server answers
SERVING, 1 otherwise, so a Docker HEALTHCHECK or a Kubernetes exec probe can use it.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Callable
from contextlib import closing

import anyio
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from superlink_async.config import DEFAULT_EXEC_ADDRESS, Address, AddressError


async def is_serving(address: Address, ca_file: str | None = None) -> bool:
    """Whether the gRPC server at ``address`` reports SERVING (bound it with a cancel scope).

    The call runs in a task of its own: when a connection drops or a deadline fires, grpclib
    cancels the task it runs in and never undoes it, which would break the next cancel scope
    that task leaves (an embedding host's ``async with SuperLink``, say).
    """
    answers: list[bool] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_check, address, ca_file, answers.append)
    return answers == [True]


async def _check(address: Address, ca_file: str | None, answer: Callable[[bool], None]) -> None:
    context = None
    if ca_file:
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["h2"])
    with closing(Channel(address.dialable().host, address.port, ssl=context)) as channel:
        try:
            response = await HealthStub(channel).Check(HealthCheckRequest())
        except Exception:  # refused, dropped, or no health service: not healthy
            answer(False)
        else:
            answer(response.status == HealthCheckResponse.SERVING)


def argument_parser() -> argparse.ArgumentParser:
    """The probe's options (the docs test parses documented probe commands with it)."""
    parser = argparse.ArgumentParser(prog="python -m superlink_async.probe", description=__doc__)
    parser.add_argument("--address", default=DEFAULT_EXEC_ADDRESS, help="gRPC port to ask")
    parser.add_argument("--root-certificates", help="CA file, when the port serves TLS")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the options, probe once, and return the exit status."""
    parser = argument_parser()
    options = parser.parse_args(argv)
    try:
        address = Address.parse(options.address)
    except AddressError as exc:
        parser.error(str(exc))

    async def probe() -> bool:
        with anyio.move_on_after(options.timeout):
            return await is_serving(address, options.root_certificates)
        return False  # no answer in time

    serving = asyncio.run(probe())
    print("SERVING" if serving else "NOT_SERVING")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
