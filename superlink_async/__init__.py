"""superlink-async: an asyncio-native, drop-in replacement for flower-superlink 1.18.0.

Embedding API::

    from superlink_async import Config, SuperLink

    async with SuperLink(Config(insecure=True)) as link:
        ...

``serve(config)`` runs until SIGINT/SIGTERM/SIGQUIT; both end by raising
``SuperLinkExit`` (code 100 on a crash, with the task and the cause).
"""

from superlink_async.config import Config
from superlink_async.exit_codes import ExitCode, SuperLinkExit
from superlink_async.runtime import SuperLink, serve

__all__ = ["Config", "ExitCode", "SuperLink", "SuperLinkExit", "serve"]
