"""The one hyperframe function we replace, and ``check`` that it is there to replace."""

from __future__ import annotations

from collections.abc import Callable

import hyperframe.frame

from superlink_async._internals._check import Fence

_FENCE = Fence("hyperframe")


def replace_data_repr(function: Callable[[bytes | None], str]) -> None:
    """Have every frame's ``repr`` show its data with ``function`` (process-wide)."""
    check()
    hyperframe.frame._raw_data_repr = function  # type: ignore[assignment]


def check() -> None:
    """Fail unless hyperframe formats frame data with a module function we can replace.

    Replacing a function its callers no longer look up would change nothing, silently.
    """
    _FENCE.function(hyperframe.frame, "_raw_data_repr", ("data",))
    _FENCE.uses(hyperframe.frame.Frame, "_body_repr", "_raw_data_repr")
