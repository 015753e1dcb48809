"""A task-group supervisor: named tasks, and the first crash stops everything as exit 100."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus

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


def crash_exit(crash: TaskCrashedError) -> SuperLinkExit:
    """The code-100 exit for a crashed task."""
    return SuperLinkExit(ExitCode.SUPERLINK_THREAD_CRASH, str(crash))


class Supervisor:
    """Runs every component as a named task in one anyio task group.

    Any task that raises cancels the others; leaving the ``async with`` then raises a
    ``SuperLinkExit`` with code 100 that names the task and the cause.
    """

    def __init__(self) -> None:
        self._group: TaskGroup | None = None

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
        try:
            return await group.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as group_error:
            if crash := _first(group_error, TaskCrashedError):
                raise crash_exit(crash) from crash.cause
            if exit_error := _first(group_error, SuperLinkExit):
                raise exit_error from None
            raise

    async def start(self, name: str, function: TaskFunction, *args: Any) -> None:
        """Start a task and wait until it reports ``started`` (e.g. its port is bound)."""
        try:
            await self._require_group().start(self._guard, name, function, *args, name=name)
        except TaskCrashedError as crash:
            raise crash_exit(crash) from crash.cause

    def start_soon(self, name: str, function: TaskFunction, *args: Any) -> None:
        """Start a task that needs no startup handshake."""
        self._require_group().start_soon(self._guard_soon, name, function, *args, name=name)

    def cancel(self) -> None:
        """Stop every task (each cleans up in its own ``finally``)."""
        self._require_group().cancel_scope.cancel()

    @staticmethod
    async def _guard(
        name: str,
        function: TaskFunction,
        *args: Any,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await function(*args, task_status=task_status)
        except Exception as exc:
            raise TaskCrashedError(name, exc) from exc

    @staticmethod
    async def _guard_soon(name: str, function: TaskFunction, *args: Any) -> None:
        try:
            await function(*args)
        except Exception as exc:
            raise TaskCrashedError(name, exc) from exc

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
