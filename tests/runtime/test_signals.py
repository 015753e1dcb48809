"""Stop signals: the first is graceful (its exit code), a second one forces the exit."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, sys
from superlink_async.runtime.signals import wait_for_stop_signal

async def main():
    waiting = asyncio.ensure_future(wait_for_stop_signal())
    await asyncio.sleep(0.2)  # let it install its handlers before the test signals us
    print("ready", flush=True)
    code = await waiting
    print(f"graceful {int(code)}", flush=True)
    await asyncio.sleep(30)  # a shutdown that hangs

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 1), (signal.SIGQUIT, 2), (signal.SIGTERM, 3)]
)
def test_first_signal_is_graceful_and_a_second_forces_the_exit(
    signum: signal.Signals, code: int
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signum)
        assert process.stdout.readline().strip() == f"graceful {code}"
        process.send_signal(signum)
        assert process.wait(timeout=10) == 128 + signum
        assert process.stderr is not None
        assert f"Received {signum.name} again: exiting now." in process.stderr.read()
    finally:
        process.kill()
        process.wait()
