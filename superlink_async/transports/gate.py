"""Admission control shared by every listener.

It counts calls in flight, refuses new ones while draining, lets shutdown wait a bounded
time for the rest, and sheds idle Fleet calls while the event loop is overloaded.

Why shed: one loop serves every API, and each signed Fleet call costs about a
millisecond of CPU. Past what the loop can serve, a fleet that polls every few seconds
keeps a call of every node queued, each loop iteration grows to seconds, and a ServerApp's
upload, which needs many iterations to arrive, starves. Refusing the surplus at once with
``UNAVAILABLE`` (which a 1.18 SuperNode retries with backoff) keeps iterations short, so
admitted calls stay fast and the ServerAppIo and Exec APIs are never starved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from superlink_async.config import DEFAULT_MAX_FLEET_IN_FLIGHT, DEFAULT_SHED_LAG
from superlink_async.loop_lag import LoopLag
from superlink_async.metrics import Metrics

#: The reference's limit for gRPC messages in both directions (2 GiB - 1).
MAX_MESSAGE_BYTES = 2_147_483_647
#: Connections the kernel may queue before we accept them (it caps this at somaxconn).
#: asyncio's default of 100 drops SYNs when a fleet (re)connects at once, and a SuperNode
#: whose SYN is dropped retries after 1, 3, 7, 15 s: long enough for its signed timestamp
#: to expire before its first call arrives.
LISTEN_BACKLOG = 4096


#: Fleet APIs whose calls may be shed (the GrpcAdapter's one method hides which call it is).
FLEET_APIS = frozenset({"Fleet", "FleetRest"})
#: Fleet calls refused while the loop runs late: the idle poll, nine in ten Fleet calls,
#: which a 1.18 SuperNode retries on ``UNAVAILABLE`` with jittered backoff (1 s, 2 s, ...
#: at most 20 s).
SHED_WHEN_LATE = frozenset({"PullMessages"})
#: Refused while too many Fleet calls are in flight: polls and registrations (a fleet
#: that connects at once). A registration is made once per node, so it is not refused for
#: lag alone: on a loop that other processes slow down, nodes would never get in.
#: Never shed: pings (a SuperNode's ping backoff has no cap, and after 60 s without one
#: the node counts as offline) and the calls that carry a node's work on an instruction
#: (GetRun, GetFab, PushMessages), so that a round in progress finishes before new work
#: is taken on.
SHED_WHEN_CROWDED = SHED_WHEN_LATE | {"CreateNode"}


@dataclass(frozen=True)
class Admission:
    """When sheddable Fleet calls are refused: either bound alone is enough."""

    #: The loop runs at least this late (seconds; ``LoopLag.level``). 0 turns it off.
    max_lag: float = DEFAULT_SHED_LAG
    #: At least this many Fleet calls are in flight. 0 turns it off.
    max_fleet_in_flight: int = DEFAULT_MAX_FLEET_IN_FLIGHT


class RefusedError(Exception):
    """A call refused before it started: clients should retry later (``UNAVAILABLE``)."""


class ShuttingDownError(RefusedError):
    """A call arrived while the server drains; clients should retry elsewhere or later."""


class OverloadedError(RefusedError):
    """A sheddable Fleet call arrived while the loop was overloaded."""


class CallGate:
    """Tracks in-flight calls so a shutdown can drain them (hypercorn's bounded drain)."""

    def __init__(
        self,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        metrics: Metrics | None = None,
        *,
        lag: LoopLag | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._metrics = metrics
        #: Largest request message admitted (gRPC message or REST body).
        self.max_message_bytes = max_message_bytes
        #: Without a measured lag, only the in-flight bound can shed.
        self.lag = lag or LoopLag()
        self.admission = admission or Admission()
        self._in_flight = 0
        self._fleet_in_flight = 0
        self._draining = False
        self._idle = anyio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        """Whether new calls are being refused."""
        return self._draining

    @property
    def in_flight(self) -> int:
        """How many admitted calls have not finished."""
        return self._in_flight

    @property
    def fleet_in_flight(self) -> int:
        """How many admitted Fleet calls have not finished."""
        return self._fleet_in_flight

    def overload(self, method: str) -> str | None:
        """Why a Fleet call of ``method`` is refused right now (a metric label), or None."""
        limits = self.admission
        if method in SHED_WHEN_LATE and limits.max_lag and self.lag.level >= limits.max_lag:
            return "loop_lag"
        if (
            method in SHED_WHEN_CROWDED
            and limits.max_fleet_in_flight
            and self._fleet_in_flight >= limits.max_fleet_in_flight
        ):
            return "in_flight"
        return None

    @asynccontextmanager
    async def admit(self, api: str, method: str) -> AsyncIterator[None]:
        """Run one call of ``api``/``method``; ``ShuttingDownError`` while draining.

        ``OverloadedError`` for a Fleet call that ``overload`` refuses.
        With metrics, the call is counted and timed under those labels.
        """
        if self._draining:
            raise ShuttingDownError("SuperLink is shutting down")
        fleet = api in FLEET_APIS
        if fleet and (reason := self.overload(method)):
            if self._metrics is not None:
                self._metrics.shed.labels(api, method, reason).inc()
            raise OverloadedError("SuperLink is overloaded; retry later")
        self._in_flight += 1
        self._fleet_in_flight += fleet
        if self._idle.is_set():
            self._idle = anyio.Event()
        try:
            if self._metrics is None:
                yield
            else:
                async with self._metrics.observe_call(api, method):
                    yield
        finally:
            self._in_flight -= 1
            self._fleet_in_flight -= fleet
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Refuse new calls and wait up to ``grace`` seconds; True if all calls finished."""
        self._draining = True
        with anyio.move_on_after(grace):
            await self._idle.wait()
        return self._in_flight == 0
