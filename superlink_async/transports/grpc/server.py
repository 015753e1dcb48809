"""Run a grpclib server as a supervised task: bind, report started, close on cancel."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Collection
from typing import Any

import anyio
from anyio.abc import TaskStatus
from grpclib.server import Server

from superlink_async.config import Address
from superlink_async.logs import logger


async def serve_grpc(
    handlers: Collection[Any],
    address: Address,
    banner: str,
    ssl: _ssl.SSLContext | None = None,
    *,
    task_status: TaskStatus[None],
) -> None:
    """Listen on ``address`` until cancelled; report ``started`` once listening.

    A port that cannot be bound raises here, before ``started``, so the supervisor sees
    the listener's crash with its cause. With ``ssl`` every connection must be TLS
    (positional, because the supervisor passes arguments positionally).
    """
    server = Server(list(handlers))
    await server.start(address.host, address.port, reuse_address=True, ssl=ssl)
    logger.info("%s on %s", banner, address)
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            server.close()
            await server.wait_closed()
