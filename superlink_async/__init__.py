"""superlink-async: an asyncio-native, drop-in replacement for flower-superlink 1.18.0.

Embedding API::

    from superlink_async import Config, SuperLink

    async with SuperLink(Config(insecure=True)) as link:
        ...

``serve(config)`` runs until SIGINT/SIGTERM/SIGQUIT; both end by raising
``SuperLinkExit`` (code 100 on a crash, with the task and the cause).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superlink_async.config import Config
from superlink_async.exit_codes import ExitCode, SuperLinkExit

if TYPE_CHECKING:
    from superlink_async.runtime import SuperLink, serve

__all__ = ["Config", "ExitCode", "SuperLink", "SuperLinkExit", "serve"]


def __getattr__(name: str) -> Any:
    """Load the server stack on first use.

    The health probe and the signature workers import modules of this package and need
    none of it.
    """
    if name in ("SuperLink", "serve"):
        from superlink_async import runtime  # noqa: PLC0415

        return getattr(runtime, name)
    raise AttributeError(f"module 'superlink_async' has no attribute {name!r}")
