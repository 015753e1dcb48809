"""Run an aiohttp application as a supervised task (REST Fleet API, metrics)."""

from __future__ import annotations

import ssl

import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from superlink_async.config import Address
from superlink_async.logs import logger
from superlink_async.transports.gate import LISTEN_BACKLOG


async def serve_http(
    app: web.Application,
    address: Address,
    banner: str,
    tls: ssl.SSLContext | None = None,
    *,
    task_status: TaskStatus[None],
) -> None:
    """Serve an aiohttp ``app`` until cancelled: the site stops, then the runner cleans up."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            address.host or None,
            address.port,
            ssl_context=tls,
            reuse_address=True,
            backlog=LISTEN_BACKLOG,
        )
        await site.start()
        logger.info("%s on %s", banner, address)
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
