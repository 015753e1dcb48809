"""Signal handling for the CLI: the first SIGINT/SIGTERM/SIGQUIT stops gracefully."""

from __future__ import annotations

import os
import signal
import sys
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
    """
    with anyio.open_signal_receiver(*GRACEFUL_SIGNALS) as received:
        first = await anext(aiter(received))
    for sig in GRACEFUL_SIGNALS:
        signal.signal(sig, _force_exit)
    return GRACEFUL_SIGNALS[signal.Signals(first)]
