"""A request body arriving on a bulk connection goes before the fleet's polling.

A busy loop reads each socket once per iteration, however much it holds. Past the fleet
size the loop serves, an iteration lasts about as long as the Fleet calls it admitted
take (up to a second and more at ``--max-fleet-in-flight`` 1,024), and a socket gives at
most what the kernel buffered (about 4-6 MB here): a ServerApp's 50 MB PushMessages at
3,000 polling nodes took 13 such iterations, 17 s.

So while the loop runs late (``CallGate.behind``), a ServerApp's or the CLI's request
body still arriving past 1 MiB holds the Fleet listeners' connections: they are not read
(``pause_reading``). The calls already admitted finish, the loop's iterations shorten to
what the upload needs, and the polls wait in the kernel's socket buffers, to be read once
that call has answered. A SuperNode notices only a slower answer; its poll was asking for
the work that body carries. At 3,750 polling nodes the 50 MB push arrived after one held
iteration of 3.1 s (the calls admitted before it) and 0.3 s of transfer. A loop that is
not late reads both fast enough, and holds nothing.

A hold lasts at most ``MAX_HOLD`` seconds; then the fleet is read for at least ``REST``
seconds before the next, so a body that takes longer (or a peer that opens one and never
finishes it) cannot keep a SuperNode's pings out for its 60 s of patience, and a stalled
body gets no new hold.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable

from superlink_async.metrics import Metrics

#: Longest stretch for which the fleet is not read (seconds): long enough for the calls
#: admitted before it to finish at a saturated loop and a body of tens of MB to arrive.
MAX_HOLD = 10.0
#: Shortest stretch for which the fleet is read again after a hold that ran its length.
REST = 1.0


class Precedence:
    """Holds the reading of enlisted (fleet) transports while any holder's body arrives."""

    def __init__(
        self,
        behind: Callable[[], bool],
        metrics: Metrics | None = None,
        *,
        max_hold: float = MAX_HOLD,
        rest: float = REST,
    ) -> None:
        """``behind``: whether the loop runs late enough for a hold to help."""
        self._behind = behind
        self._metrics = metrics
        self._max_hold = max_hold
        self._rest = rest
        self._enlisted: weakref.WeakSet[asyncio.Transport] = weakref.WeakSet()
        self._paused: list[asyncio.Transport] = []
        self._holders: set[object] = set()
        self._held_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resting = False

    @property
    def held(self) -> bool:
        """Whether the enlisted transports are not being read now."""
        return self._held_since is not None

    def enlist(self, transport: asyncio.Transport) -> None:
        """Let ``transport``'s reading be held (a Fleet connection); paused now if held."""
        self._enlisted.add(transport)
        if self.held:
            self._pause(transport)

    def hold(self, holder: object) -> None:
        """``holder`` has a body arriving: hold the fleet while the loop is behind.

        Not while the fleet rests after a hold that ran its length.
        """
        self._holders.add(holder)
        if self.held or self._resting or not self._behind():
            return
        self._held_since = time.monotonic()
        for transport in list(self._enlisted):
            self._pause(transport)
        self._timer = asyncio.get_running_loop().call_later(self._max_hold, self._held_too_long)

    def release(self, holder: object) -> None:
        """``holder``'s large calls have answered (or its connection is gone)."""
        self._holders.discard(holder)
        if not self._holders and self.held:
            self._resume()

    def _pause(self, transport: asyncio.Transport) -> None:
        # A transport already paused (by aiohttp's flow control, say) stays its owner's.
        if not transport.is_closing() and transport.is_reading():
            transport.pause_reading()
            self._paused.append(transport)

    def _resume(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        paused, self._paused = self._paused, []
        for transport in paused:
            if not transport.is_closing():
                transport.resume_reading()
        if self._held_since is not None and self._metrics is not None:
            self._metrics.fleet_held.inc(time.monotonic() - self._held_since)
        self._held_since = None

    def _held_too_long(self) -> None:
        """The fleet is read for ``REST`` seconds; holders must show new data for the next hold."""
        self._timer = None
        self._resume()
        self._holders.clear()
        self._resting = True
        asyncio.get_running_loop().call_later(self._rest, self._rested)

    def _rested(self) -> None:
        self._resting = False
