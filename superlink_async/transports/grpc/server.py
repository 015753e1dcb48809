"""Run a grpclib server as a supervised task: bind, report started, close on cancel.

grpclib's server keeps more per connection than a SuperLink can afford with thousands of
long-lived SuperNode connections, so ``serve_grpc`` runs a ``LeanServer``:

- grpclib's per-connection handler keeps every finished call (its task, stream, buffers,
  queues and events) until ten more calls arrive on that connection. A SuperNode makes
  one call every few seconds, so each idle connection held about ten dead calls: most of
  our memory per node and most of the objects the cyclic GC had to walk. Ours forgets a
  call the moment it ends.
- h2 keeps each HTTP/2 setting's values in a deque of 64 slots, about 8 KB per
  connection for a handful of integers; ours swaps them for lists at the first call.
  The connection's two asyncio events get list-backed waiters, and the two per-connection
  tables of bound methods (grpclib's event dispatch, h2's frame dispatch) become shared
  tables that bind on lookup: together about 3.5 KB less per connection.
- h2 remembers how the last 65,536 streams of a connection were closed. At one pull
  every three seconds that list grows for days (to several MB per connection). A
  SuperNode has at most a couple of calls open at once, so a short memory is enough for
  the late frames it exists for.

All of this reaches into grpclib's, h2's and asyncio's internals
(``Server._protocol_factory``, ``Handler._tasks``, ``H2Connection._closed_streams`` and
``_frame_dispatch_table``, ``Settings._settings``, ``EventsProcessor.processors``,
``Event._waiters``); tests/transports/grpc pins them.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable, Collection
from typing import Any, ClassVar

import anyio
from anyio.abc import TaskStatus
from grpclib.protocol import H2Protocol, Stream
from grpclib.server import Handler, Server
from h2.connection import H2Connection

from superlink_async.config import Address
from superlink_async.logs import logger
from superlink_async.transports.gate import CallGate
from superlink_async.transports.listener import PausingListener, bind

#: Closed streams h2 remembers per connection (it answers late frames on them politely).
CLOSED_STREAMS_REMEMBERED = 64


class _SettingValues(list):  # type: ignore[type-arg]
    """A setting's current value and pending ones: what h2 keeps in a 64-slot deque."""

    def popleft(self) -> Any:
        return self.pop(0)


def _compact_settings(connection: H2Connection) -> None:
    """Swap h2's per-setting deques (about 21 per connection, 0.4 KB each) for lists."""
    for settings in (connection.local_settings, connection.remote_settings):
        values: dict[Any, Any] = settings._settings
        for code, history in values.items():
            values[code] = _SettingValues(history)


class _ForgetfulHandler(Handler):
    """grpclib's handler, dropping each call's task (and all it holds) when it ends."""

    _settings_compacted = False

    def accept(
        self,
        stream: Stream,
        headers: Any,
        release_stream: Callable[[], Any],
    ) -> None:
        if not self._settings_compacted:
            # By a connection's first call both sides' SETTINGS have been exchanged, so
            # no more settings get a deque of their own.
            _compact_settings(stream._h2_connection)
            self._settings_compacted = True
        super().accept(stream, headers, release_stream)
        self._tasks[stream].add_done_callback(lambda _: self._tasks.pop(stream, None))

    def cancel(self, stream: Stream) -> None:
        task = self._tasks.pop(stream, None)
        if task is not None:
            task.cancel()
            self._cancelled.add(task)


class _BoundOnLookup:
    """A dispatch table of one object's methods that binds them when looked up.

    grpclib and h2 each build a dict of a dozen bound methods per connection (about
    1.2 KB each); this shares one table of functions per class instead.
    """

    __slots__ = ("_functions", "_owner")
    _tables: ClassVar[dict[tuple[type, str], dict[Any, Any]]] = {}

    def __init__(self, owner: Any, attribute: str) -> None:
        key = (type(owner), attribute)
        if key not in self._tables:
            bound = getattr(owner, attribute)
            self._tables[key] = {kind: method.__func__ for kind, method in bound.items()}
        self._functions = self._tables[key]
        self._owner = owner

    @classmethod
    def replace(cls, owner: Any, attribute: str) -> None:
        """Put a shared table in place of ``owner``'s dict of bound methods."""
        setattr(owner, attribute, cls(owner, attribute))

    def __getitem__(self, kind: Any) -> Any:
        return self._functions[kind].__get__(self._owner)


class _ShortMemoryProtocol(H2Protocol):
    """grpclib's HTTP/2 protocol holding less per connection (see the module docstring)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        h2_connection = self.connection._connection
        closed_streams = h2_connection._closed_streams
        closed_streams._size_limit = CLOSED_STREAMS_REMEMBERED  # type: ignore[attr-defined]
        _BoundOnLookup.replace(h2_connection, "_frame_dispatch_table")
        _BoundOnLookup.replace(self.processor, "processors")
        for event in (self.connection.write_ready, self.connection.stream_close_waiter):
            # asyncio.Event only appends, removes and iterates its waiters: a list does,
            # at a tenth of an empty deque's size.
            event._waiters = []  # type: ignore[assignment]


class LeanServer(Server):
    """A grpclib ``Server`` whose idle connections keep no finished calls.

    ``listen`` is its ``start``: it accepts through a ``PausingListener``, which stops
    accepting, quietly, while the process is out of file descriptors.
    """

    async def listen(
        self, address: Address, gate: CallGate, ssl: _ssl.SSLContext | None = None
    ) -> None:
        """Bind ``address`` and accept on it until ``close``."""
        if self._server is not None:
            raise RuntimeError("Server is already started")
        sockets = await bind(address)
        self._server = PausingListener(  # type: ignore[assignment]
            f"Listener on {address}", sockets, self._protocol_factory, gate, ssl
        )
        self._server_closed_fut = self._loop.create_future()

    def _protocol_factory(self) -> H2Protocol:
        self.__gc_step__()
        handler = _ForgetfulHandler(
            self._mapping, self._codec, self._status_details_codec, self.__dispatch__
        )
        self._handlers.add(handler)
        return _ShortMemoryProtocol(handler, self._config, self._h2_config)


async def serve_grpc(
    handlers: Collection[Any],
    address: Address,
    banner: str,
    ssl: _ssl.SSLContext | None = None,
    gate: CallGate | None = None,
    *,
    task_status: TaskStatus[None],
) -> None:
    """Listen on ``address`` until cancelled; report ``started`` once listening.

    A port that cannot be bound raises here, before ``started``, so the supervisor sees
    the listener's crash with its cause. With ``ssl`` every connection must be TLS; the
    ``gate``'s metrics count the listener's pauses (both positional, because the
    supervisor passes arguments positionally).
    """
    server = LeanServer(list(handlers))
    await server.listen(address, gate or CallGate(), ssl)
    logger.info("%s on %s", banner, address)
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            server.close()
            await server.wait_closed()
