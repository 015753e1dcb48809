"""The two call shapes every servicer uses, with errors mapped to gRPC statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.server import Stream

from superlink_async._internals import grpclib as grpclib_internals
from superlink_async.logs import logger
from superlink_async.services.errors import ServiceError, Status, state_failure
from superlink_async.transports.gate import CallGate, RefusedError, ShuttingDownError

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
    if isinstance(exc, RefusedError):
        return GRPCError(GrpcStatus.UNAVAILABLE, str(exc))
    if (failure := state_failure(exc)) is not None:
        return GRPCError(GRPC_STATUS[failure.status], failure.message)
    logger.error("Unexpected error while serving a call", exc_info=exc)
    return GRPCError(GrpcStatus.INTERNAL, f"Internal error: {type(exc).__name__}")


async def _recv_exactly(stream: Stream[Any, Any], size: int) -> bytes:
    """``size`` bytes of the request, or none if it ended first.

    A stream that ends after some but not all of them is a client's truncated message,
    not our fault, so it is answered, not logged.
    """
    try:
        return await grpclib_internals.read_body(stream, size)
    except grpclib_internals.TruncatedError:
        raise ServiceError(Status.INVALID_ARGUMENT, "Truncated request message") from None


async def receive(stream: Stream[Any, Any], max_bytes: int) -> Any:
    """Read one request message, refusing one larger than ``max_bytes`` before buffering it.

    grpclib itself buffers whatever length a client announces, so one client could exhaust
    our memory; this reads the 5-byte gRPC prefix first, through grpclib's stream internals
    (``_internals.grpclib``) because no public hook sees the prefix.
    """
    prefix = await _recv_exactly(stream, 5)
    if not prefix:
        raise ServiceError(Status.INVALID_ARGUMENT, "Missing request message")
    if prefix[0]:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED, "Compressed messages are not supported")
    size = int.from_bytes(prefix[1:], "big")
    if size > max_bytes:
        raise GRPCError(
            GrpcStatus.RESOURCE_EXHAUSTED,
            f"Received message larger than max ({size} vs. {max_bytes})",
        )
    data = await _recv_exactly(stream, size)
    if len(data) != size:
        raise ServiceError(Status.INVALID_ARGUMENT, "Truncated request message")
    try:
        return grpclib_internals.decode_request(stream, data)
    except DecodeError as exc:
        name = grpclib_internals.request_type(stream).__name__
        raise ServiceError(Status.INVALID_ARGUMENT, f"Malformed {name}") from exc


async def unary(
    stream: Stream[Any, Any],
    handler: Callable[[RequestT], Awaitable[ResponseT]],
    gate: CallGate,
) -> None:
    """Receive one request, delegate, send one response."""
    try:
        service, _, method = grpclib_internals.method_path(stream).rpartition("/")
        async with gate.admit(service.rpartition(".")[2], method):
            request = await receive(stream, gate.max_message_bytes)
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
        request = await receive(stream, gate.max_message_bytes)
        async for response in handler(request):
            await stream.send_message(response)
    except GRPCError:
        raise
    except Exception as exc:
        raise to_grpc_error(exc) from exc
