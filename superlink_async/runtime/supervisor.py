"""A task-group supervisor: named tasks, stopped stage by stage; a crash stops all as exit 100."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.lowlevel import checkpoint_if_cancelled

from superlink_async.exit_codes import ExitCode, SuperLinkExit

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup

TaskFunction = Callable[..., Awaitable[None]]


class TaskCrashedError(Exception):
    """A supervised task ended with an exception; names the task and carries the cause."""

    def __init__(self, task_name: str, cause: BaseException) -> None:
        super().__init__(f"Task '{task_name}' crashed: {type(cause).__name__}: {cause}")
        self.task_name = task_name
        self.cause = cause


class TaskReturnedError(Exception):
    """A supervised task returned before it was stopped: a component that quietly ended."""

    def __init__(self) -> None:
        super().__init__("it returned before it was stopped (a supervised task runs until then)")


def crash_exit(crash: TaskCrashedError) -> SuperLinkExit:
    """The code-100 exit for a crashed task."""
    return SuperLinkExit(ExitCode.SUPERLINK_THREAD_CRASH, str(crash))


@dataclass
class _Task:
    """One supervised task: the scope that stops it, and whether it has ended."""

    name: str
    stage: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    ended: anyio.Event = field(default_factory=anyio.Event)


class Supervisor:
    """Runs every component as a named task in one anyio task group.

    Each task belongs to a shutdown ``stage``; ``stop(stage)`` ends that stage's tasks and
    waits for them, so a shutdown ends the components in the order it chooses; leaving
    the ``async with`` cancels whatever is left. Any task that raises, or returns before it
    was stopped, cancels the others; leaving the ``async with`` then raises a
    ``SuperLinkExit`` with code 100 naming the task and the cause.
    """

    def __init__(self) -> None:
        self._group: TaskGroup | None = None
        self._tasks: list[_Task] = []

    async def __aenter__(self) -> Supervisor:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        group = self._require_group()
        group.cancel_scope.cancel()  # whatever no stage stopped
        try:
            return await group.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group_error:
            if crash := _first(group_error, TaskCrashedError):
                raise crash_exit(crash) from crash.cause
            if exit_error := _first(group_error, SuperLinkExit):
                raise exit_error from exit_error.__cause__
            raise

    @property
    def running(self) -> list[str]:
        """The names of the tasks that have not ended, in the order they started."""
        return [task.name for task in self._tasks]

    async def start(self, name: str, function: TaskFunction, *args: Any, stage: str) -> None:
        """Start a task and wait until it reports ``started`` (e.g. its port is bound)."""
        task = self._add(name, stage)
        try:
            await self._require_group().start(self._guard, task, function, *args, name=name)
        except TaskCrashedError as crash:
            raise crash_exit(crash) from crash.cause

    def start_soon(self, name: str, function: TaskFunction, *args: Any, stage: str) -> None:
        """Start a task that needs no startup handshake."""
        task = self._add(name, stage)
        self._require_group().start_soon(self._guard_soon, task, function, *args, name=name)

    async def stop(self, stage: str) -> None:
        """Cancel the tasks of ``stage`` and wait until each has cleaned up and ended.

        Each task bounds its own cleanup (runtime.shutdown holds the bounds).
        """
        stopping = [task for task in self._tasks if task.stage == stage]
        for task in stopping:
            task.scope.cancel()
        for task in stopping:
            await task.ended.wait()

    def _add(self, name: str, stage: str) -> _Task:
        task = _Task(name, stage)
        self._tasks.append(task)
        return task

    async def _guard(
        self,
        task: _Task,
        function: TaskFunction,
        *args: Any,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        await self._supervise(task, function(*args, task_status=task_status))

    async def _guard_soon(self, task: _Task, function: TaskFunction, *args: Any) -> None:
        await self._supervise(task, function(*args))

    async def _supervise(self, task: _Task, running: Awaitable[None]) -> None:
        """Await the task; an exception, or a return before ``stop``, is its crash."""
        try:
            with task.scope:
                try:
                    await running
                except Exception as exc:
                    raise TaskCrashedError(task.name, exc) from exc
                if not task.scope.cancel_called:
                    # Returning because the whole group is being cancelled is no crash.
                    await checkpoint_if_cancelled()
                    raise TaskCrashedError(task.name, TaskReturnedError())
        finally:
            self._tasks.remove(task)
            task.ended.set()

    def _require_group(self) -> TaskGroup:
        if self._group is None:
            raise RuntimeError("Supervisor is not running")
        return self._group


ErrorT = TypeVar("ErrorT", bound=BaseException)


def _first(group_error: BaseExceptionGroup[BaseException], kind: type[ErrorT]) -> ErrorT | None:
    """The first exception of ``kind`` in a (possibly nested) exception group."""
    matching, _ = group_error.split(kind)
    found: BaseException | None = matching
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if isinstance(found, kind) else None
