"""Admission control shared by every listener.

It counts calls in flight, refuses new ones while draining, lets shutdown wait a bounded
time for the rest, and holds the two bounds of overload.

Why: one loop serves every API, and each signed Fleet call costs about a millisecond of
CPU. Past what the loop can serve, a fleet that polls every few seconds keeps a call of
every node queued, each loop iteration grows to seconds, and a ServerApp's upload, which
needs many iterations to arrive, starves. While the loop runs late (``behind``), idle
polls are answered early, without their signature check; while too many Fleet calls are
in flight (``crowded``), polls and registrations are refused with ``UNAVAILABLE``; while a
ServerApp's upload arrives, the fleet's connections are not read (``precedence``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from superlink_async.config import (
    DEFAULT_MAX_FLEET_IN_FLIGHT,
    DEFAULT_OVERLOAD_LAG,
    MAX_MESSAGE_BYTES,
)
from superlink_async.loop_lag import LoopLag
from superlink_async.metrics import Metrics
from superlink_async.transports.precedence import Precedence

#: Connections the kernel may queue before we accept them (it caps this at somaxconn).
#: asyncio's default of 100 drops SYNs when a fleet (re)connects at once, and a SuperNode
#: whose SYN is dropped retries after 1, 3, 7, 15 s: long enough for its signed timestamp
#: to expire before its first call arrives.
LISTEN_BACKLOG = 4096


#: Fleet APIs whose calls may be shed (the GrpcAdapter's one method hides which call it is).
FLEET_APIS = frozenset({"Fleet", "FleetRest"})
#: Fleet calls refused while too many Fleet calls are in flight: polls and registrations
#: (a fleet that connects at once, a state store that slows down), which a 1.18 SuperNode
#: retries on ``UNAVAILABLE`` with jittered backoff (first after 0-1 s, at most 20 s).
#: Never refused: pings (a SuperNode's ping backoff has no cap, and after 60 s without one
#: the node counts as offline) and the calls that carry a node's work on an instruction
#: (GetRun, GetFab, PushMessages), so that a round in progress finishes first.
#: Polls are not refused for lag: a refused poll comes back within a second instead of the
#: usual 3 s, so refusing them raised the load it was meant to shed (measured: 94 % of
#: polls refused at 1,000 nodes). A late loop answers idle polls early instead (``behind``).
SHEDDABLE = frozenset({"PullMessages", "CreateNode"})


@dataclass(frozen=True)
class Admission:
    """The two bounds of overload."""

    #: The loop runs at least this late (seconds; ``LoopLag.level``): idle polls are
    #: answered early. 0 turns it off.
    max_lag: float = DEFAULT_OVERLOAD_LAG
    #: At least this many Fleet calls are in flight: polls and registrations are refused.
    #: 0 turns it off.
    max_fleet_in_flight: int = DEFAULT_MAX_FLEET_IN_FLIGHT


class RefusedError(Exception):
    """A call refused before it started: clients should retry later (``UNAVAILABLE``)."""


class ShuttingDownError(RefusedError):
    """A call arrived while the server drains; clients should retry elsewhere or later."""


class OverloadedError(RefusedError):
    """A sheddable Fleet call arrived while too many Fleet calls were in flight."""


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
        #: Bulk listeners' uploads hold the reading of the Fleet listeners' connections.
        self.precedence = Precedence(lambda: self.behind, metrics)
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

    @property
    def behind(self) -> bool:
        """Whether the loop runs late enough for idle polls to be answered early."""
        return 0 < self.admission.max_lag <= self.lag.level

    @property
    def crowded(self) -> bool:
        """Whether polls and registrations are refused for the Fleet calls in flight."""
        bound = self.admission.max_fleet_in_flight
        return 0 < bound <= self._fleet_in_flight

    def shed(self, api: str, method: str, reason: str) -> OverloadedError:
        """The error that refuses one call for overload (retried by a SuperNode), counted."""
        if self._metrics is not None:
            self._metrics.shed.labels(api, method).inc()
        return OverloadedError(f"SuperLink is overloaded; {reason}")

    def count_early_answer(self, method: str) -> None:
        """Note a call answered early because the loop was ``behind``."""
        if self._metrics is not None:
            self._metrics.early_answers.labels(method).inc()

    @asynccontextmanager
    async def admit(self, api: str, method: str) -> AsyncIterator[None]:
        """Run one call of ``api``/``method``; ``ShuttingDownError`` while draining.

        ``OverloadedError`` for a sheddable Fleet call while ``crowded``.
        With metrics, the call is counted and timed under those labels.
        """
        if self._draining:
            raise ShuttingDownError("SuperLink is shutting down")
        fleet = api in FLEET_APIS
        if fleet and method in SHEDDABLE and self.crowded:
            raise self.shed(api, method, "retry later")
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

    def accept_paused(self, listener: str) -> None:
        """Count one pause of ``listener``, out of file descriptors (with metrics)."""
        if self._metrics is not None:
            self._metrics.accept_pauses.labels(listener).inc()

    async def drain(self, grace: float) -> bool:
        """Refuse new calls and wait up to ``grace`` seconds; True if all calls finished."""
        self._draining = True
        with anyio.move_on_after(grace):
            await self._idle.wait()
        return self._in_flight == 0
