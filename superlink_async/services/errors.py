"""The one error type services raise; transports map its status to gRPC or HTTP."""

from __future__ import annotations

from enum import Enum

from superlink_async.state.base import StateUnavailableError, StorageFullError


class Status(Enum):
    """Outcome classes the services use (a subset of gRPC's, which transports map)."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    FAILED_PRECONDITION = "failed_precondition"
    UNIMPLEMENTED = "unimplemented"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"


class ServiceError(Exception):
    """A request that cannot be served; ``message`` is shown to the client as is."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def state_failure(exc: Exception) -> ServiceError | None:
    """What a client is told about a state failure that is not its fault, if it has a status.

    A full disk and a database that cannot be reached are UNAVAILABLE, the status a 1.18
    SuperNode retries; anything else (None) is an unexpected fault.
    """
    if isinstance(exc, StorageFullError | StateUnavailableError):
        return ServiceError(Status.UNAVAILABLE, str(exc))
    return None
