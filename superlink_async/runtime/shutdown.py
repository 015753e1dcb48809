"""The shutdown, stage by stage: what each stage ends and the longest it may take.

This table is the one place the bounds live. ``SuperLink.__aexit__`` runs the stages in
this order, each stage's tasks take their bound from here, and docs/operations.md shows the
same table (tests/runtime/test_shutdown.py holds the two together). A stage is polite for
its bound, then forceful (SIGKILL, a cancelled call), and the forceful step takes
milliseconds; so with the defaults a stop is over within the grace plus
``BOUND_AFTER_DRAIN`` (3 s), well inside the 10 s Docker waits before its SIGKILL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from superlink_async.config import Config
from superlink_async.logs import logger


@dataclass(frozen=True)
class Stage:
    """One step of the shutdown."""

    name: str
    #: Seconds the stage may take before it turns forceful (infinite: never cut short).
    bound: float
    #: What the stage ends, and how (docs/operations.md shows it).
    ends: str


DRAIN = Stage(
    "drain",
    Config.shutdown_grace,  # the default; --shutdown-grace (the configured grace) replaces it
    "New calls get `UNAVAILABLE`; calls in flight may finish for `--shutdown-grace` seconds "
    "(default 5). Those still running afterwards are cut off when the listeners close.",
)
CHILDREN = Stage(
    "children",
    1.0,
    "Every `flwr-serverapp` / `flwr-simulation` child and what it started (its process "
    "group) gets SIGTERM, then SIGKILL.",
)
HANDOVER = Stage(
    "handover",
    1.0,
    "The replica's lease task stops; its runs still starting or running are finished as "
    "`failed` and the pending runs it had reserved go back to the queue, in one state call, "
    "so another replica takes over at once. If the state cannot do it within the bound, "
    "another replica does it once the lease has lapsed.",
)
LISTENERS = Stage(
    "listeners",
    0.5,
    "The gRPC listeners close and cancel the calls still in flight; the REST and metrics "
    "runners give theirs aiohttp's `shutdown_timeout` (half the bound: aiohttp may wait it "
    "twice, before and after cancelling a call).",
)
WORKERS = Stage(
    "workers",
    0.5,
    "The signature workers get EOF, then SIGKILL; the message purger, the loop-lag meter, "
    "the state's change listener and the tasks a host started with `start_soon` are "
    "cancelled.",
)
STATE = Stage(
    "state",
    math.inf,
    "The state closes after the operations already queued, which are committed; it is not "
    "cut short (SQLite's connection thread would keep the process alive anyway).",
)

#: The stages in the order they run.
STAGES = (DRAIN, CHILDREN, HANDOVER, LISTENERS, WORKERS, STATE)

#: What aiohttp's ``AppRunner`` gets as ``shutdown_timeout`` (see ``LISTENERS``).
REST_SHUTDOWN_TIMEOUT = LISTENERS.bound / 2

#: Longest the stages after the drain take together (the state's close takes milliseconds).
BOUND_AFTER_DRAIN = CHILDREN.bound + HANDOVER.bound + LISTENERS.bound + WORKERS.bound


@contextmanager
def stage(current: Stage, bound: float | None = None) -> Iterator[None]:
    """Log the stage's start and how long it took (DEBUG): the order is in the log.

    ``bound`` overrides the table's (the drain's is the configured grace).
    """
    limit = current.bound if bound is None else bound
    logger.debug(
        "Shutdown stage %d/%d '%s' (bound: %s)",
        STAGES.index(current) + 1,
        len(STAGES),
        current.name,
        "none" if math.isinf(limit) else f"{limit:g}s",
    )
    started = time.monotonic()
    try:
        yield
    finally:
        logger.debug("Shutdown stage '%s' took %.3fs", current.name, time.monotonic() - started)
