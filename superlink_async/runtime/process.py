"""What only a process's entry point may decide: event loop, GC, HPACK decoder, fd limit.

An embedding host owns all four, so ``SuperLink``/``serve`` never touch them; the command
line (and so the container) does, through ``run_server``.
"""

from __future__ import annotations

import asyncio
import gc
import resource
from collections.abc import Callable, Coroutine
from typing import Any

from superlink_async.config import ConfigError
from superlink_async.logs import logger
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


def raise_file_limit() -> None:
    """Raise the soft limit on open file descriptors to the hard limit, and log the figure.

    Every connection costs a descriptor, and the soft limit is often 1,024: a fleet of
    1,000 SuperNodes ran this process out of them. The hard limit is what the operator
    (or container) allows; nothing above it is attempted.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit above nr_open
            logger.info("File descriptors: at most %d (not raised to %s: %s)", soft, hard, exc)
            return
        logger.info("File descriptors: at most %d (soft limit raised from %d)", hard, soft)
    else:
        logger.info("File descriptors: at most %d", hard)


def run_server(main: Callable[[], Coroutine[Any, Any, None]], event_loop: str) -> None:
    """Run ``main()`` to its end on ``event_loop`` (``asyncio`` or ``uvloop``), tuned.

    Tuned: the file-descriptor limit (``raise_file_limit``), the HTTP/2 stack's speed-ups
    (``transports.grpc.speedups``), then the GC (``tune_gc``), which freezes their tables
    with everything else.

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
    raise_file_limit()
    speedups.install()
    tune_gc()
    runner(main())
