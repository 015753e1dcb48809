"""What only a process's entry point may decide: event loop, garbage collector, HPACK decoder.

An embedding host owns all three, so ``SuperLink``/``serve`` never touch them; the command
line (and so the container) does, through ``run_server``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any

from superlink_async.config import ConfigError
from superlink_async.transports.grpc import speedups

#: Young-object collections happen after this many net allocations (CPython: 700).
GC_YOUNG_THRESHOLD = 5000
#: Full collections wait for this many middle-generation ones (CPython: 10).
GC_OLD_THRESHOLD = 100


def tune_gc() -> None:
    """Keep the cyclic GC from pausing a busy server for a tenth of a second at a time.

    With thousands of connections, a full collection walks every live object (about
    0.1 s per 150,000 here) and CPython ran one every few seconds: each stalled every
    call in flight. What exists at start-up (modules, descriptors) lives as long as the
    process, so it is frozen out of every collection; young collections run less often,
    and full ones only after a hundred middle ones. Cyclic garbage is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, gc.get_threshold()[1], GC_OLD_THRESHOLD)


def run_server(main: Callable[[], Coroutine[Any, Any, None]], event_loop: str) -> None:
    """Run ``main()`` to its end on ``event_loop`` (``asyncio`` or ``uvloop``), tuned.

    Tuned: the HTTP/2 stack's speed-ups (``transports.grpc.speedups``), then the GC
    (``tune_gc``), which freezes their tables with everything else.

    A requested uvloop that is not installed is a ``ConfigError``, before anything runs.
    """
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if event_loop == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 (optional dependency)
        except ImportError:
            raise ConfigError(
                "--event-loop uvloop needs uvloop: pip install 'superlink-async[uvloop]'"
            ) from None
        runner = uvloop.run
    speedups.install()
    tune_gc()
    runner(main())
