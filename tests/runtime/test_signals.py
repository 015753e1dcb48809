"""Stop signals: the first is graceful (its exit code), a second one forces the exit, and
serve() gives the handlers back when it returns."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a forced exit may take on a loaded machine (the hang it cuts short lasts 120).
FORCED_EXIT_WITHIN = 60

SCRIPT = """
import asyncio, sys
from superlink_async.runtime.signals import wait_for_stop_signal

async def main():
    waiting = asyncio.ensure_future(wait_for_stop_signal())
    await asyncio.sleep(0.2)  # let it install its handlers before the test signals us
    print("ready", flush=True)
    code = await waiting
    print(f"graceful {int(code)}", flush=True)
    await asyncio.sleep(120)  # a shutdown that hangs

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
        # Generous: the suite's CI shares two cores with whatever an earlier test left busy.
        try:
            status = process.wait(timeout=FORCED_EXIT_WITHIN)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            _, stderr = process.communicate()
            message = f"a second {signum.name} did not end the process:\n{stderr}"
            raise AssertionError(message) from exc
        assert status == 128 + signum
        assert process.stderr is not None
        assert f"Received {signum.name} again: exiting now." in process.stderr.read()
    finally:
        process.kill()
        process.wait()


EMBEDDED = """
import asyncio, os, signal, sys
from pathlib import Path
from superlink_async import SuperLinkExit
from superlink_async.runtime import serve
from tests.ports import loopback_config

STOP_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)

def host_handler(signum, frame):
    print(f"host handler got {signum}", flush=True)

async def main():
    for sig in STOP_SIGNALS:
        signal.signal(sig, host_handler)
    serving = asyncio.ensure_future(serve(loopback_config(Path(sys.argv[1]))))
    while signal.getsignal(signal.SIGTERM) is host_handler:  # until serve() listens for it
        await asyncio.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
    try:
        await serving
    except SuperLinkExit as exc:
        print(f"serve ended with {int(exc.code)}", flush=True)
    print("restored" if all(signal.getsignal(s) is host_handler for s in STOP_SIGNALS)
          else "not restored", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the host's handler, not a forced exit

asyncio.run(main())
"""


def test_serve_gives_the_stop_signals_their_handlers_back(tmp_path: Path) -> None:
    """A host that embeds ``serve`` keeps its own handlers once it returns (not ours)."""
    done = subprocess.run(
        [sys.executable, "-c", EMBEDDED, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "serve ended with 3",
        "restored",
        f"host handler got {int(signal.SIGTERM)}",
    ]
