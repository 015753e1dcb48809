"""The two call shapes every servicer uses, with errors mapped to gRPC statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.server import Stream

from superlink_async.logs import logger
from superlink_async.services.errors import ServiceError, Status
from superlink_async.transports.gate import CallGate, ShuttingDownError

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

GRPC_STATUS = {
    Status.INVALID_ARGUMENT: GrpcStatus.INVALID_ARGUMENT,
    Status.NOT_FOUND: GrpcStatus.NOT_FOUND,
    Status.PERMISSION_DENIED: GrpcStatus.PERMISSION_DENIED,
    Status.FAILED_PRECONDITION: GrpcStatus.FAILED_PRECONDITION,
    Status.UNIMPLEMENTED: GrpcStatus.UNIMPLEMENTED,
    Status.UNAVAILABLE: GrpcStatus.UNAVAILABLE,
    Status.UNAUTHENTICATED: GrpcStatus.UNAUTHENTICATED,
}


def to_grpc_error(exc: Exception) -> GRPCError:
    """The status a client sees; unexpected faults are logged and answered INTERNAL."""
    if isinstance(exc, ServiceError):
        return GRPCError(GRPC_STATUS[exc.status], exc.message)
    if isinstance(exc, ShuttingDownError):
        return GRPCError(GrpcStatus.UNAVAILABLE, str(exc))
    logger.error("Unexpected error while serving a call", exc_info=exc)
    return GRPCError(GrpcStatus.INTERNAL, f"Internal error: {type(exc).__name__}")


async def unary(
    stream: Stream[Any, Any],
    handler: Callable[[RequestT], Awaitable[ResponseT]],
    gate: CallGate,
) -> None:
    """Receive one request, delegate, send one response."""
    try:
        async with gate.admit():
            request = await stream.recv_message()
            if request is None:
                raise ServiceError(Status.INVALID_ARGUMENT, "Missing request message")
            response = await handler(request)
            await stream.send_message(response)
    except GRPCError:
        raise
    except Exception as exc:
        raise to_grpc_error(exc) from exc


async def server_streaming(
    stream: Stream[Any, Any],
    handler: Callable[[RequestT], AsyncIterator[ResponseT]],
    gate: CallGate,
) -> None:
    """Receive one request, send every response the handler yields.

    Streams are not counted as in flight: they can last for minutes, so a drain must not
    wait for them; closing the server cancels them instead.
    """
    try:
        if gate.draining:
            raise ShuttingDownError("SuperLink is shutting down")
        request = await stream.recv_message()
        if request is None:
            raise ServiceError(Status.INVALID_ARGUMENT, "Missing request message")
        async for response in handler(request):
            await stream.send_message(response)
    except GRPCError:
        raise
    except Exception as exc:
        raise to_grpc_error(exc) from exc
