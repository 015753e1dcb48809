"""Run an aiohttp application as a supervised task (REST Fleet API, metrics)."""

from __future__ import annotations

import ssl

import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from superlink_async.config import Address
from superlink_async.logs import logger
from superlink_async.transports.gate import CallGate
from superlink_async.transports.listener import PausingListener, bind


class _PausingSite(web.BaseSite):
    """An aiohttp site that accepts through a ``PausingListener`` (see transports.listener)."""

    def __init__(
        self,
        runner: web.AppRunner,
        address: Address,
        gate: CallGate,
        tls: ssl.SSLContext | None,
        yields: bool,
    ) -> None:
        super().__init__(runner, ssl_context=tls)
        self._address = address
        self._gate = gate
        self._yields = yields

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._address}"

    async def start(self) -> None:
        await super().start()
        assert self._runner.server is not None
        self._server = PausingListener(  # type: ignore[assignment]
            f"Listener on {self._address}",
            await bind(self._address),
            self._runner.server,
            self._gate,
            self._ssl_context,
            yields=self._yields,
        )


async def serve_http(
    app: web.Application,
    address: Address,
    banner: str,
    tls: ssl.SSLContext | None = None,
    gate: CallGate | None = None,
    *,
    shutdown_timeout: float,
    yields: bool = False,
    task_status: TaskStatus[None],
) -> None:
    """Serve an aiohttp ``app`` until cancelled: the site stops, then the runner cleans up.

    A request still running when it is cancelled gets ``shutdown_timeout`` seconds, then
    is cancelled (aiohttp then waits up to that long again for it to end); aiohttp's own
    default of 60 s would hold a shutdown that long. The ``gate``'s metrics count the
    listener's pauses (out of file descriptors). With ``yields`` (the REST Fleet API) its
    connections are not read while a bulk upload arrives (``CallGate.precedence``).
    """
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await _PausingSite(runner, address, gate or CallGate(), tls, yields).start()
        logger.info("%s on %s", banner, address)
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
