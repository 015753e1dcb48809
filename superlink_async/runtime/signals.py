"""Signal handling for ``serve``: the first SIGINT/SIGTERM/SIGQUIT stops gracefully."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import anyio

from superlink_async.exit_codes import ExitCode

GRACEFUL_SIGNALS = {
    signal.SIGINT: ExitCode.GRACEFUL_EXIT_SIGINT,
    signal.SIGQUIT: ExitCode.GRACEFUL_EXIT_SIGQUIT,
    signal.SIGTERM: ExitCode.GRACEFUL_EXIT_SIGTERM,
}


def _force_exit(signum: int, frame: FrameType | None) -> None:
    """A second stop signal cuts a stuck shutdown short (children die with us)."""
    sys.stderr.write(f"Received {signal.Signals(signum).name} again: exiting now.\n")
    os._exit(128 + signum)


async def wait_for_stop_signal() -> ExitCode:
    """Wait for the first stop signal; afterwards a second one ends the process at once.

    The second signal gets an explicit handler rather than the default action because, as
    PID 1 in a container, a process without a handler would ignore SIGTERM entirely.
    Call it inside ``stop_signal_handlers_restored`` so that the handler does not outlive
    the shutdown it guards.
    """
    with anyio.open_signal_receiver(*GRACEFUL_SIGNALS) as received:
        first = await anext(aiter(received))
    for sig in GRACEFUL_SIGNALS:
        signal.signal(sig, _force_exit)
    return GRACEFUL_SIGNALS[signal.Signals(first)]


@contextmanager
def stop_signal_handlers_restored() -> Iterator[None]:
    """On exit, give the stop signals back the handlers they had on entry.

    An application embedding ``serve`` then keeps its own (``signal.signal``) handlers.
    A handler installed outside Python cannot be put back; the default action replaces
    ours then. (asyncio keeps one loop handler per signal and offers no way to read it, so
    one added with ``loop.add_signal_handler`` is not restored: such a host embeds
    ``SuperLink`` instead, and handles its signals itself.)
    """
    saved = {sig: signal.getsignal(sig) for sig in GRACEFUL_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
