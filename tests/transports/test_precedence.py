"""Precedence: which fleet connections a bulk upload holds, for how long, and what it leaves.

The transports are real socket transports of the running loop (one end of a socket pair).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from superlink_async.metrics import Metrics
from superlink_async.transports.precedence import Precedence

pytestmark = pytest.mark.anyio


@pytest.fixture
async def transports() -> AsyncIterator[list[asyncio.Transport]]:
    """Three connected socket transports; closed afterwards."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.Transport] = []
    peers: list[socket.socket] = []
    for _ in range(3):
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        made.append(transport)
        peers.append(theirs)
    yield made
    for transport in made:
        transport.close()
    for peer in peers:
        peer.close()


def reading(transports: list[asyncio.Transport]) -> list[bool]:
    return [transport.is_reading() for transport in transports]


class Behind:
    """Whether the loop counts as late, set by the test."""

    def __init__(self, value: bool = True) -> None:
        self.value = value

    def __call__(self) -> bool:
        return self.value


async def test_a_hold_pauses_the_enlisted_until_its_holder_releases(
    transports: list[asyncio.Transport],
) -> None:
    """Enlisted transports are not read while held, and are read again at the release; the
    held time is counted."""
    metrics = Metrics("replica-1")
    precedence = Precedence(Behind(), metrics)
    for transport in transports:
        precedence.enlist(transport)
    upload = object()
    precedence.hold(upload)
    assert precedence.held
    assert reading(transports) == [False, False, False]
    await anyio.sleep(0.05)
    precedence.release(upload)
    assert not precedence.held
    assert reading(transports) == [True, True, True]
    held = metrics.registry.get_sample_value("superlink_fleet_reads_held_seconds_total")
    assert held is not None and held >= 0.04


async def test_nothing_is_held_while_the_loop_keeps_up(transports: list[asyncio.Transport]) -> None:
    """A loop that is not late reads both fast enough: a hold would only delay the fleet."""
    behind = Behind(False)
    precedence = Precedence(behind)
    precedence.enlist(transports[0])
    precedence.hold(upload := object())
    assert not precedence.held and transports[0].is_reading()
    behind.value = True
    precedence.hold(upload)  # the next read of the same body, once the loop runs late
    assert precedence.held and not transports[0].is_reading()


async def test_the_fleet_stays_held_until_every_holder_releases(
    transports: list[asyncio.Transport],
) -> None:
    precedence = Precedence(Behind())
    precedence.enlist(transports[0])
    first, second = object(), object()
    precedence.hold(first)
    precedence.hold(second)
    precedence.release(first)
    assert not transports[0].is_reading()
    precedence.release(second)
    assert transports[0].is_reading()


async def test_a_transport_its_owner_paused_stays_paused(
    transports: list[asyncio.Transport],
) -> None:
    """A hold resumes only what it paused (aiohttp pauses for its own flow control)."""
    precedence = Precedence(Behind())
    paused_by_owner, other, _ = transports
    paused_by_owner.pause_reading()
    precedence.enlist(paused_by_owner)
    precedence.enlist(other)
    precedence.hold(upload := object())
    precedence.release(upload)
    assert not paused_by_owner.is_reading()
    assert other.is_reading()


async def test_a_connection_made_during_a_hold_waits_for_its_end(
    transports: list[asyncio.Transport],
) -> None:
    precedence = Precedence(Behind())
    precedence.hold(upload := object())
    precedence.enlist(transports[0])
    assert not transports[0].is_reading()
    precedence.release(upload)
    assert transports[0].is_reading()


async def test_a_hold_ends_after_its_bound_and_the_fleet_rests_before_the_next(
    transports: list[asyncio.Transport],
) -> None:
    """A body that takes longer than ``max_hold`` (or stalls) lets the fleet be read for
    ``rest`` seconds; a new hold then needs a new read of a body."""
    precedence = Precedence(Behind(), max_hold=0.05, rest=0.2)
    precedence.enlist(transports[0])
    precedence.hold(upload := object())
    await anyio.sleep(0.1)
    assert not precedence.held and transports[0].is_reading()
    precedence.hold(upload)  # while the fleet rests
    assert transports[0].is_reading()
    await anyio.sleep(0.2)
    assert transports[0].is_reading()  # a stalled body asks for nothing more
    precedence.hold(upload)
    assert not transports[0].is_reading()
    precedence.release(upload)


async def test_a_closed_transport_is_neither_paused_nor_resumed(
    transports: list[asyncio.Transport],
) -> None:
    precedence = Precedence(Behind())
    closing, open_ = transports[0], transports[1]
    precedence.enlist(closing)
    precedence.enlist(open_)
    precedence.hold(upload := object())
    closing.close()
    precedence.release(upload)  # no error for the closed one
    assert open_.is_reading()
