"""Runtime: the SuperLink object, its supervisor, scheduler and signal handling.

``SuperLink`` (the whole server stack) is loaded on first use: a signature worker process
(``python -m superlink_async.runtime.signature_workers``) imports this package too, and
needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superlink_async.config import Config
from superlink_async.exit_codes import SuperLinkExit

if TYPE_CHECKING:
    from superlink_async.runtime.superlink import SuperLink

__all__ = ["SuperLink", "serve"]


def __getattr__(name: str) -> Any:
    """``SuperLink``, imported when first asked for."""
    if name == "SuperLink":
        from superlink_async.runtime.superlink import SuperLink  # noqa: PLC0415

        return SuperLink
    raise AttributeError(f"module 'superlink_async.runtime' has no attribute {name!r}")


async def serve(config: Config) -> None:
    """Run a SuperLink until a stop signal; always ends by raising ``SuperLinkExit``.

    A graceful stop raises the signal's code (0-99, process status 0) with
    "SuperLink terminated gracefully."; a crash raises code 100. The stop signals' handlers
    are what they were before once it returns (a second signal forces the exit meanwhile).
    """
    from superlink_async.runtime.signals import (  # noqa: PLC0415
        stop_signal_handlers_restored,
        wait_for_stop_signal,
    )
    from superlink_async.runtime.superlink import SuperLink  # noqa: PLC0415

    with stop_signal_handlers_restored():
        async with SuperLink(config):
            code = await wait_for_stop_signal()
    raise SuperLinkExit(code, "SuperLink terminated gracefully.")
