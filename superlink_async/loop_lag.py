"""How far behind the event loop runs: the one measured signal of overload.

Everything on the loop waits its turn, so the lateness of a short timer is what every
callback queued beside it waits too. While it is high, idle polls are answered before
their signature check (``transports.gate.CallGate.behind``) and signature checks go to
worker processes, when there are any.
"""

from __future__ import annotations

import asyncio
import math

import anyio
from anyio.abc import TaskStatus

#: How often the loop's lateness is measured (seconds).
TICK = 0.02
#: The level follows lateness with this time constant (seconds): one stall (a collection,
#: a burst of new connections) moves it a little, a loop that stays behind moves it all.
SMOOTHING = 0.2


class LoopLag:
    """The loop's recent lateness in seconds, kept current by ``run`` (a supervised task).

    ``level`` is an average of each tick's lateness, weighted by the time each tick took
    (time constant ``SMOOTHING``); it is 0 until ``run`` starts, so that nothing is shed
    by a server that does not measure.
    """

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self.level = 0.0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        task_status.started()
        while True:
            start = loop.time()
            await asyncio.sleep(self.tick)
            self.level = follow(self.level, loop.time() - start, self.tick)


def follow(level: float, took: float, tick: float) -> float:
    """The next level after a tick of ``tick`` seconds that took ``took``.

    The tick's lateness counts in proportion to how long it lasted, so the level moves the
    same way whether the loop is behind by many short ticks or by one long one.
    """
    weight = 1.0 - math.exp(-took / SMOOTHING)
    return level + weight * (max(0.0, took - tick) - level)
