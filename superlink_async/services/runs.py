"""Run checks several APIs share, and the signal that wakes log streams."""

from __future__ import annotations

import anyio

from superlink_async.services.errors import ServiceError, Status
from superlink_async.state.base import FINISHED, RUNNING, STOPPED, LinkState, RunRecord


async def require_run(state: LinkState, run_id: int) -> RunRecord:
    """The run, or NOT_FOUND (the reference leaked a KeyError as UNKNOWN)."""
    run = await state.get_run(run_id)
    if run is None:
        raise ServiceError(Status.NOT_FOUND, f"Run {run_id} not found")
    return run


def not_running_reason(run: RunRecord) -> str | None:
    """Why a run does not accept work, in the exact words peers expect, or None."""
    if run.status.status == RUNNING:
        return None
    reason = f"Run is {run.status.status}."
    if run.status.status == FINISHED and run.status.sub_status == STOPPED:
        reason += " Stopped by user."
    return reason


def ensure_running(run: RunRecord) -> RunRecord:
    """The run if it is running, else PERMISSION_DENIED.

    SuperNodes and ServerApps read that status as "run not running" and carry on.
    """
    if reason := not_running_reason(run):
        raise ServiceError(Status.PERMISSION_DENIED, reason)
    return run


async def require_running(state: LinkState, run_id: int) -> RunRecord:
    """``ensure_running`` of the stored run; NOT_FOUND if there is none."""
    return ensure_running(await require_run(state, run_id))


def raise_if_finished(run: RunRecord) -> None:
    """PERMISSION_DENIED for a finished run: nothing may change it any more."""
    if run.status.status == FINISHED and (reason := not_running_reason(run)):
        raise ServiceError(Status.PERMISSION_DENIED, reason)


class RunEvents:
    """Wakes waiters when run logs or statuses change, so log streams need not poll fast."""

    def __init__(self) -> None:
        self._changed = anyio.Event()

    def notify(self) -> None:
        """Something changed: wake everyone waiting."""
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, at_most: float) -> None:
        """Return on the next change, or after ``at_most`` seconds."""
        with anyio.move_on_after(at_most):
            await self._changed.wait()
