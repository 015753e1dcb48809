"""superlink-async inside an existing aiohttp application, next to the host's own work.

Run it:  python examples/embedded.py   (then point SuperNodes and `flwr` at it as usual)

The host serves its own HTTP route and runs its own background task; the SuperLink runs in
the same event loop. Ctrl-C stops both cleanly. If a SuperLink component crashes, the
``async with`` block is cancelled and ``SuperLinkExit`` (code 100, naming the task and the
cause) reaches the host, which reports it and shuts its own parts down.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import anyio
from aiohttp import web

from superlink_async import Config, ExitCode, SuperLink, SuperLinkExit
from superlink_async.config import Address


async def host_status_app(link: SuperLink, beats: list[float]) -> web.Application:
    """The host's own HTTP API, reading the live SuperLink state."""

    async def status(request: web.Request) -> web.Response:
        runs = await link.state.get_runs()
        return web.json_response(
            {"runs": {str(run.run_id): run.status.status for run in runs}, "beats": len(beats)}
        )

    app = web.Application()
    app.router.add_get("/status", status)
    return app


async def run_host(
    config: Config,
    host_address: Address,
    stop: anyio.Event,
    crash_after: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Serve the host app and the SuperLink until ``stop`` is set; return an exit code.

    ``crash_after``, when given, is awaited inside a task the host adds to the SuperLink's
    supervision and then raises: a way to see how the host learns of a crash.
    """
    beats: list[float] = []
    try:
        async with SuperLink(config) as link:
            runner = web.AppRunner(await host_status_app(link, beats))
            await runner.setup()
            await web.TCPSite(runner, host_address.host, host_address.port).start()
            link.start_soon("host-heartbeat", heartbeat, beats)
            if crash_after is not None:
                link.start_soon("host-job", failing_job, crash_after)
            try:
                await stop.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await runner.cleanup()
    except SuperLinkExit as exc:
        print(f"The SuperLink stopped: {exc.message}")
        return int(exc.code)
    return int(ExitCode.SUCCESS)


async def heartbeat(beats: list[float]) -> None:
    """Stands for the host's own periodic work."""
    while True:
        beats.append(anyio.current_time())
        await anyio.sleep(1)


async def failing_job(wait: Callable[[], Awaitable[None]]) -> None:
    """A host task that fails: the supervisor turns it into the code-100 exit."""
    await wait()
    raise RuntimeError("the host's job failed")


async def main() -> int:
    """Defaults of flower-superlink (plaintext), host status page on :8080."""
    stop = anyio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await run_host(Config(insecure=True), Address("127.0.0.1", 8080), stop)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
