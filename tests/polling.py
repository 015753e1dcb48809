"""Bounded polling for tests that wait on another task or process."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def eventually(condition: Callable[[], bool], seconds: float, every: float = 0.02) -> None:
    """Return once ``condition()`` holds; fail the test after ``seconds``."""
    with anyio.fail_after(seconds):
        while True:
            if condition():
                return
            await anyio.sleep(every)
