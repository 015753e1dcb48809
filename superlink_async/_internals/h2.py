"""Every use of h2's private names, and ``check`` that the installed h2 has them.

h2 keeps more per connection than thousands of idle SuperNode connections afford, with no
setting to keep less (``transports.grpc.server`` says how much): these functions shrink
what one connection holds.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any

import h2.utilities
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import Settings

from superlink_async._internals._check import Fence
from superlink_async._internals._tables import BoundOnLookup

_FENCE = Fence("h2")


class _SettingValues(list):  # type: ignore[type-arg]
    """A setting's current value and pending ones: what h2 keeps in a 64-slot deque.

    ``Settings`` reads the first, appends and pops from the left: a list does all three.
    """

    def popleft(self) -> Any:
        return self.pop(0)


def compact_settings(connection: H2Connection) -> None:
    """Swap h2's per-setting deques (about 21 per connection, 0.4 KB each) for lists."""
    for settings in (connection.local_settings, connection.remote_settings):
        values: dict[Any, Any] = settings._settings
        for code, history in values.items():
            values[code] = _SettingValues(history)


def limit_closed_streams(connection: H2Connection, count: int) -> None:
    """Have ``connection`` remember how its last ``count`` streams closed, not 65,536."""
    closed_streams = connection._closed_streams
    closed_streams._size_limit = count  # type: ignore[attr-defined]


def share_frame_dispatch(connection: H2Connection) -> None:
    """Replace ``connection``'s dict of a dozen bound methods by a table shared per class."""
    connection._frame_dispatch_table = BoundOnLookup(  # type: ignore[assignment]
        connection, "_frame_dispatch_table", connection._frame_dispatch_table
    )


def check() -> None:
    """Fail, naming what is missing, unless the installed h2 has every name above."""
    fence = _FENCE
    with fence.reaching():
        connection = H2Connection(H2Configuration(client_side=False))
    size_limit_dict = fence.attribute(h2.utilities, "SizeLimitDict")
    closed_streams = fence.attribute(connection, "_closed_streams")
    if not isinstance(closed_streams, size_limit_dict):
        fence.fail("H2Connection._closed_streams of type SizeLimitDict")
    fence.attribute(closed_streams, "_size_limit")
    fence.uses(size_limit_dict, "_check_size_limit", "_size_limit")
    table = fence.attribute(connection, "_frame_dispatch_table")
    if not isinstance(table, dict) or not all(map(inspect.ismethod, table.values())):
        fence.fail("H2Connection._frame_dispatch_table of bound methods")
    fence.uses(H2Connection, "_receive_frame", "_frame_dispatch_table")
    values = fence.attribute(connection.local_settings, "_settings")
    if not isinstance(values, dict) or not all(
        isinstance(history, collections.deque) for history in values.values()
    ):
        fence.fail("Settings._settings of deques")
    fence.uses(Settings, "acknowledge", "_settings", "popleft")
