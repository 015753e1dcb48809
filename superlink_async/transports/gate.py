"""Admission control shared by every listener.

It counts calls in flight, refuses new ones while draining, and lets shutdown wait a
bounded time for the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from superlink_async.metrics import Metrics

#: The reference's limit for gRPC messages in both directions (2 GiB - 1).
MAX_MESSAGE_BYTES = 2_147_483_647
#: Connections the kernel may queue before we accept them (it caps this at somaxconn).
#: asyncio's default of 100 drops SYNs when a fleet (re)connects at once, and a SuperNode
#: whose SYN is dropped retries after 1, 3, 7, 15 s: long enough for its signed timestamp
#: to expire before its first call arrives.
LISTEN_BACKLOG = 4096


class ShuttingDownError(Exception):
    """A call arrived while the server drains; clients should retry elsewhere or later."""


class CallGate:
    """Tracks in-flight calls so a shutdown can drain them (hypercorn's bounded drain)."""

    def __init__(
        self, max_message_bytes: int = MAX_MESSAGE_BYTES, metrics: Metrics | None = None
    ) -> None:
        self._metrics = metrics
        #: Largest request message admitted (gRPC message or REST body).
        self.max_message_bytes = max_message_bytes
        self._in_flight = 0
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

    @asynccontextmanager
    async def admit(self, api: str, method: str) -> AsyncIterator[None]:
        """Run one call of ``api``/``method``; ``ShuttingDownError`` while draining.

        With metrics, the call is counted and timed under those labels.
        """
        if self._draining:
            raise ShuttingDownError("SuperLink is shutting down")
        self._in_flight += 1
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
