"""Child processes that die with us and are ended politely, then firmly, with all they started.

Each child leads its own process group, so ending it also ends the processes it started and
left behind (``flwr-simulation``'s Ray processes), and a Ctrl-C in our terminal reaches us
only: we end the children ourselves, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
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
    """Start ``argv`` in a new process group, with our stdout/stderr (its lines join ours)."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=DIE_WITH_PARENT,
        start_new_session=True,
    )


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    """Send ``sig`` to the child's process group, if anything of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def end_leftovers(process: asyncio.subprocess.Process) -> None:
    """SIGKILL what an exited child left running in its group (e.g. Ray workers).

    The kernel keeps a group's id reserved while any member lives, so this reaches only
    processes the child started.
    """
    _signal_group(process, signal.SIGKILL)


async def terminate(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM the child's group, wait up to ``grace`` seconds, then SIGKILL it.

    Return the child's exit code; nothing of its group is left running afterwards.
    """
    if process.returncode is None:
        _signal_group(process, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            _signal_group(process, signal.SIGKILL)
    code = await process.wait()
    end_leftovers(process)
    return code
