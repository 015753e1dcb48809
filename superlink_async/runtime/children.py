"""Child processes that die with us and are ended politely, then firmly."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import signal
import sys
from collections.abc import Callable, Sequence

import anyio

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook asking the kernel to SIGKILL the child if we die.

    This covers the case no cleanup code can: the SuperLink itself being SIGKILLed.
    The libc function is resolved here, before any fork, so the hook only makes a call.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_parent_death_signal


#: ``preexec_fn`` for any child that must not outlive this process (None off Linux).
DIE_WITH_PARENT = _parent_death_signal()


async def spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """Start ``argv`` with our stdout/stderr, so its log lines appear in ours."""
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, preexec_fn=DIE_WITH_PARENT
    )


async def terminate(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; return the exit code."""
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(grace):
            return await process.wait()
        process.kill()
    return await process.wait()
