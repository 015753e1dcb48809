"""Every use of grpclib's private names, and ``check`` that the installed grpclib has them.

grpclib has no public hook for what ``transports.grpc`` needs: the 5-byte prefix of a
request message (to refuse one larger than the limit before buffering it), the tasks a
connection's handler keeps (to forget a call when it ends), the objects each connection
holds (to make them smaller), and a listener of our own in place of
``loop.create_server``. The functions below are the only code that reaches into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpclib.protocol
from grpclib.protocol import H2Protocol
from grpclib.protocol import Stream as H2Stream
from grpclib.server import Handler, Server, Stream

from superlink_async._internals._check import Fence
from superlink_async._internals._tables import BoundOnLookup

if TYPE_CHECKING:  # looked up by ``check``, which says so if one is missing
    from grpclib.config import Configuration
    from grpclib.protocol import Connection, EventsProcessor
    from h2.config import H2Configuration
    from h2.connection import H2Connection

HandlerT = TypeVar("HandlerT", bound=Handler)

_FENCE = Fence("grpclib")


class TruncatedError(Exception):
    """A request's body ended part-way through the bytes asked for."""


# --- the server -------------------------------------------------------------------------


def install_protocol_factory(server: Server, factory: Callable[[], H2Protocol]) -> None:
    """Make ``server``'s connections (``start``'s and ``serve_on``'s) with ``factory``."""
    server._protocol_factory = factory  # type: ignore[method-assign]


def connection_configs(server: Server) -> tuple[Configuration, H2Configuration]:
    """The grpclib and h2 configurations each of ``server``'s connections is made with."""
    return server._config, server._h2_config


def new_handler(server: Server, handler_type: type[HandlerT]) -> HandlerT:
    """A ``handler_type`` for one new connection, made and tracked as grpclib's own."""
    server.__gc_step__()
    handler = handler_type(
        server._mapping, server._codec, server._status_details_codec, server.__dispatch__
    )
    server._handlers.add(handler)
    return handler


def started(server: Server) -> bool:
    """Whether ``server`` listens already."""
    return server._server is not None


def serve_on(server: Server, listener: Callable[[Callable[[], H2Protocol]], Any]) -> None:
    """Start ``server`` on ``listener(protocol_factory)`` instead of ``loop.create_server``.

    What ``Server.start`` does once it has its server. The listener needs the
    ``asyncio.Server`` methods that grpclib calls (``close``, ``wait_closed``); ``close``
    and ``wait_closed`` then work as after ``start``.
    """
    server._server = listener(server._protocol_factory)
    server._server_closed_fut = server._loop.create_future()


# --- a connection -----------------------------------------------------------------------


def call_tasks(handler: Handler) -> dict[H2Stream, asyncio.Task[None]]:
    """The task of each call ``handler`` runs, by stream (grpclib's own dict, not a copy).

    grpclib replaces the dict every tenth call (``__gc_collect__``): look it up each time.
    """
    return handler._tasks


def cancelled_calls(handler: Handler) -> set[asyncio.Task[None]]:
    """The cancelled calls' tasks that closing ``handler`` waits for (grpclib's own set).

    Replaced as ``call_tasks`` is: look it up each time.
    """
    return handler._cancelled


def h2_connection(connection: Connection) -> H2Connection:
    """The h2 connection behind grpclib's ``connection``."""
    return connection._connection


def stream_h2_connection(stream: H2Stream) -> H2Connection:
    """The h2 connection ``stream`` belongs to."""
    return stream._h2_connection


def share_event_dispatch(processor: EventsProcessor) -> None:
    """Replace ``processor``'s dict of a dozen bound methods by a table shared per class."""
    processor.processors = BoundOnLookup(  # type: ignore[assignment]
        processor, "processors", processor.processors
    )


# --- a call -----------------------------------------------------------------------------


def method_path(stream: Stream[Any, Any]) -> str:
    """The call's ``/package.Service/Method``."""
    return stream._method_name


def request_type(stream: Stream[Any, Any]) -> type:
    """The message class of the call's requests."""
    return stream._recv_type


def decode_request(stream: Stream[Any, Any], data: bytes) -> Any:
    """A request message from its bytes, as ``recv_message`` decodes it."""
    return stream._codec.decode(data, stream._recv_type)


async def read_body(stream: Stream[Any, Any], size: int) -> bytes:
    """The next ``size`` bytes of the request's body; none if it had ended.

    ``TruncatedError`` if it ended after some but not all of them: grpclib's buffer
    raises ``AssertionError`` then (tests/transports/grpc/test_calls.py pins that).
    """
    try:
        return await stream._stream.recv_data(size)
    except AssertionError:
        raise TruncatedError from None


# --- the check --------------------------------------------------------------------------


def check() -> None:
    """Fail, naming what is missing, unless the installed grpclib has every name above."""
    fence = _FENCE
    connection, processor, buffer = (
        fence.attribute(grpclib.protocol, name)
        for name in ("Connection", "EventsProcessor", "Buffer")
    )
    fence.function(Server, "_protocol_factory", ("self",))
    fence.function(Server, "__gc_step__", ("self",))
    fence.uses(Server, "start", "_protocol_factory", "_server", "_server_closed_fut", "_loop")
    fence.uses(
        Server,
        "__init__",
        "_mapping",
        "_codec",
        "_status_details_codec",
        "_config",
        "_h2_config",
        "_server",
        "_server_closed_fut",
        "_handlers",
        "_loop",
        "__dispatch__",
    )
    fence.uses(Server, "close", "_server", "_server_closed_fut", "_handlers")
    fence.function(
        Handler, "__init__", ("self", "mapping", "codec", "status_details_codec", "dispatch")
    )
    fence.uses(Handler, "__init__", "_tasks", "_cancelled", "loop")
    fence.function(Handler, "accept", ("self", "stream", "headers", "release_stream"))
    fence.function(Handler, "cancel", ("self", "stream"))
    fence.uses(Handler, "wait_closed", "_cancelled")
    fence.uses(Handler, "__gc_collect__", "_tasks", "_cancelled")
    fence.function(H2Protocol, "__init__", ("self", "handler", "config", "h2_config"))
    fence.uses(H2Protocol, "connection_made", "connection", "processor")
    fence.uses(connection, "__init__", "_connection", "write_ready", "stream_close_waiter")
    for name in ("feed", "flush", "get_peer"):
        fence.attribute(connection, name)
    fence.uses(H2Stream, "__init__", "_h2_connection")
    fence.function(H2Stream, "recv_data", ("self", "size"))
    fence.uses(buffer, "read", "AssertionError")
    fence.uses(processor, "__init__", "processors")
    fence.uses(processor, "process", "processors")
    for name in ("process", "close"):
        fence.attribute(processor, name)
    fence.uses(Stream, "__init__", "_stream", "_method_name", "_recv_type", "_codec")
