"""Runtime: the SuperLink object, its supervisor, scheduler and signal handling."""

from __future__ import annotations

from superlink_async.config import Config
from superlink_async.exit_codes import SuperLinkExit
from superlink_async.runtime.signals import stop_signal_handlers_restored, wait_for_stop_signal
from superlink_async.runtime.superlink import SuperLink

__all__ = ["SuperLink", "serve"]


async def serve(config: Config) -> None:
    """Run a SuperLink until a stop signal; always ends by raising ``SuperLinkExit``.

    A graceful stop raises the signal's code (0-99, process status 0) with
    "SuperLink terminated gracefully."; a crash raises code 100. The stop signals' handlers
    are what they were before once it returns (a second signal forces the exit meanwhile).
    """
    with stop_signal_handlers_restored():
        async with SuperLink(config):
            code = await wait_for_stop_signal()
    raise SuperLinkExit(code, "SuperLink terminated gracefully.")
