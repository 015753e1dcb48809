"""Signal handling for the CLI: the first SIGINT/SIGTERM/SIGQUIT stops gracefully."""

from __future__ import annotations

import signal

import anyio

from superlink_async.exit_codes import ExitCode

GRACEFUL_SIGNALS = {
    signal.SIGINT: ExitCode.GRACEFUL_EXIT_SIGINT,
    signal.SIGQUIT: ExitCode.GRACEFUL_EXIT_SIGQUIT,
    signal.SIGTERM: ExitCode.GRACEFUL_EXIT_SIGTERM,
}


async def wait_for_stop_signal() -> ExitCode:
    """Wait for the first stop signal; afterwards a second one kills the process at once.

    Restoring the default handlers is what makes the second signal forceful, as in the
    reference: a stuck shutdown can always be cut short.
    """
    with anyio.open_signal_receiver(*GRACEFUL_SIGNALS) as received:
        first = await anext(aiter(received))
    for sig in GRACEFUL_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    return GRACEFUL_SIGNALS[signal.Signals(first)]
