"""Every use of asyncio's private names, and ``check`` that this Python's asyncio has them."""

from __future__ import annotations

import asyncio
import collections

from superlink_async._internals._check import Fence

_FENCE = Fence("asyncio", "run superlink-async on a Python its pyproject.toml names")


def use_list_waiters(event: asyncio.Event) -> None:
    """Give ``event`` a list of waiters, at a tenth of an empty deque's size.

    ``asyncio.Event`` only appends, removes and iterates its waiters, which a list does.
    """
    event._waiters = []  # type: ignore[assignment]


def check() -> None:
    """Fail, naming what is missing, unless ``asyncio.Event`` keeps its waiters as above."""
    fence = _FENCE
    with fence.reaching():
        waiters = fence.attribute(asyncio.Event(), "_waiters")
    if not isinstance(waiters, collections.deque | list):
        fence.fail("Event._waiters of type deque")
    for method in ("wait", "set"):
        fence.uses(asyncio.Event, method, "_waiters")
