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

ServerApps and the ``flwr`` CLI connect differently: a few connections that move whole
models at once. Their listeners (``BULK``) read up to 16 MiB per turn of the loop instead
of asyncio's 256 KiB, open 64 MiB HTTP/2 windows instead of grpclib's 4 MiB, and let 16 MiB
of a response queue in the transport instead of 64 KiB. A busy loop takes each socket's
turn once per iteration, so with the defaults a 100 MB push needed 400 iterations to
arrive (and waited for a window update every 4 MiB), however fast the iterations were.
While a request body arrives on one of them, the Fleet connections are not read
(``transports.precedence``), so that those iterations are short.

It also answers peers that break the rules, which grpclib alone answered with silence and
a traceback in our log:

- a ``-bin`` metadata value that is not base64 gets INVALID_ARGUMENT at once;
- a header name or value that is not ASCII gets its stream reset (PROTOCOL_ERROR);
- a protocol error gets the GOAWAY h2 prepared and the connection is closed; a frame of
  an unknown type is ignored, as HTTP/2 requires;
- a connection that has not completed the HTTP/2 handshake ``HANDSHAKE_TIMEOUT`` seconds
  after it was accepted gets GOAWAY SETTINGS_TIMEOUT and is closed.

All of this reaches into grpclib's, h2's and asyncio's internals, through the fenced
functions of ``_internals.grpclib``, ``_internals.h2`` and ``_internals.asyncio`` (whose
checks run at start-up); tests/transports/grpc pins their effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, cast

import anyio
from anyio.abc import TaskStatus
from grpclib import Status as GrpcStatus
from grpclib.config import Configuration
from grpclib.encoding.base import GRPC_CONTENT_TYPE
from grpclib.metadata import decode_bin_value, encode_grpc_message
from grpclib.protocol import H2Protocol, Stream
from grpclib.server import Handler, Server
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    Event,
    RequestReceived,
    SettingsAcknowledged,
    StreamEnded,
    StreamReset,
    UnknownFrameReceived,
)
from h2.exceptions import ProtocolError as H2ProtocolError

from superlink_async._internals import asyncio as asyncio_internals
from superlink_async._internals import grpclib as grpclib_internals
from superlink_async._internals import h2 as h2_internals
from superlink_async.config import Address
from superlink_async.logs import logger
from superlink_async.transports.gate import CallGate
from superlink_async.transports.listener import PausingListener, bind
from superlink_async.transports.precedence import Precedence

#: Closed streams h2 remembers per connection (it answers late frames on them politely).
CLOSED_STREAMS_REMEMBERED = 64
#: Seconds a connection has, once accepted (after TLS, with TLS), to complete the HTTP/2
#: handshake; docs/operations.md explains the figure.
HANDSHAKE_TIMEOUT = 20.0

MiB = 1 << 20
#: A request body still arriving past this many bytes makes its call a large one, whose
#: upload holds the fleet's reading (``transports.precedence``).
LARGE_BODY = 1 * MiB


@dataclass(frozen=True)
class ConnectionProfile:
    """How a listener's connections move data: many small calls, or few large ones."""

    #: Inbound HTTP/2 flow-control window of a connection and of each stream.
    window_bytes: int
    #: Bytes read from the socket per turn of the loop; 0: asyncio's own (256 KiB).
    read_bytes: int
    #: Response bytes that may wait in the transport before writers pause; 0: asyncio's
    #: own (64 KiB).
    write_buffer_bytes: int
    #: Fleet connections: not read while a bulk connection's request body arrives
    #: (``transports.precedence``); bulk connections (read_bytes set) hold them.
    yields: bool = False


#: SuperNodes: thousands of connections, small calls; grpclib's and asyncio's defaults.
FLEET = ConnectionProfile(window_bytes=4 * MiB, read_bytes=0, write_buffer_bytes=0, yields=True)
#: ServerApps and the ``flwr`` CLI: few connections that carry whole models.
BULK = ConnectionProfile(window_bytes=64 * MiB, read_bytes=16 * MiB, write_buffer_bytes=16 * MiB)


def _undecodable_metadata(headers: Sequence[tuple[str, str]]) -> str | None:
    """The first ``-bin`` metadata key whose value is not base64, if any.

    grpclib decodes these keys (all but pseudo-headers and ``grpc-*``) before a call
    reaches a servicer, and one it cannot decode used to leave the call unanswered and a
    "Server error" traceback in the log.
    """
    for key, value in headers:
        if key.endswith("-bin") and not key.startswith((":", "grpc-")):
            try:
                decode_bin_value(value.encode("ascii"))
            except ValueError:
                return key
    return None


async def _refuse(stream: Stream, message: str, release_stream: Callable[[], Any]) -> None:
    """Answer a call INVALID_ARGUMENT at once (trailers only), as grpclib answers its own."""
    try:
        await stream.send_headers(
            [
                (":status", "200"),
                ("content-type", GRPC_CONTENT_TYPE),
                ("grpc-status", str(GrpcStatus.INVALID_ARGUMENT.value)),
                ("grpc-message", encode_grpc_message(message)),
            ],
            end_stream=True,
        )
        if stream.closable:
            stream.reset_nowait()  # no need to send us the rest of the request
    except H2ProtocolError:
        pass  # the client reset the stream or closed the connection first
    finally:
        release_stream()


class _ForgetfulHandler(Handler):
    """grpclib's handler, dropping each call's task (and all it holds) when it ends.

    A call whose metadata grpclib could not decode is answered here instead, and one with
    a header name or value that is not ASCII is reset (RST_STREAM PROTOCOL_ERROR).
    """

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
            h2_internals.compact_settings(grpclib_internals.stream_h2_connection(stream))
            self._settings_compacted = True
        if not all(name.isascii() and value.isascii() for name, value in headers):
            # A malformed request (HTTP/2 and gRPC allow ASCII only): a stream error.
            stream.reset_nowait(ErrorCodes.PROTOCOL_ERROR)
            release_stream()
            return
        undecodable = _undecodable_metadata(headers)
        if undecodable is None:
            super().accept(stream, headers, release_stream)
            task = grpclib_internals.call_tasks(self)[stream]
        else:
            message = f"Metadata {undecodable} is not valid base64"
            task = self.loop.create_task(_refuse(stream, message, release_stream))
            grpclib_internals.call_tasks(self)[stream] = task
        task.add_done_callback(lambda _: grpclib_internals.call_tasks(self).pop(stream, None))

    def cancel(self, stream: Stream) -> None:
        task = grpclib_internals.call_tasks(self).pop(stream, None)
        if task is not None:
            task.cancel()
            grpclib_internals.cancelled_calls(self).add(task)


class _LeanProtocol(H2Protocol):
    """grpclib's HTTP/2 protocol holding less per connection, and closing on hostile peers.

    (See the module docstring.) A peer that breaks the protocol gets a GOAWAY and a
    closed connection, one DEBUG line in our log and no traceback; one that has not
    completed the HTTP/2 handshake ``handshake_timeout`` seconds after connecting gets
    GOAWAY SETTINGS_TIMEOUT.
    """

    _handshake_timer: asyncio.TimerHandle | None = None

    def __init__(
        self,
        handler: Handler,
        config: Configuration,
        h2_config: H2Configuration,
        handshake_timeout: float,
    ) -> None:
        super().__init__(handler, config, h2_config)
        self._handshake_timeout = handshake_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        h2_connection = grpclib_internals.h2_connection(self.connection)
        h2_internals.limit_closed_streams(h2_connection, CLOSED_STREAMS_REMEMBERED)
        h2_internals.share_frame_dispatch(h2_connection)
        grpclib_internals.share_event_dispatch(self.processor)
        for event in (self.connection.write_ready, self.connection.stream_close_waiter):
            asyncio_internals.use_list_waiters(event)
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self._handshake_timeout, self._handshake_timed_out
        )

    def data_received(self, data: bytes) -> None:
        """grpclib's, but a protocol error is answered with GOAWAY before the connection closes.

        grpclib closes without sending the GOAWAY h2 prepared (and logs a traceback at
        DEBUG), and raises ``NotImplementedError`` for a frame of a type it does not know,
        which asyncio logged as a fatal error with a traceback before dropping the
        connection. HTTP/2 says to ignore such frames.
        """
        try:
            events = self.connection.feed(data)
        except H2ProtocolError as error:
            self._close(f"protocol error: {error}")  # h2 has queued the GOAWAY
            return
        if self._handshake_timer is not None and any(
            isinstance(event, SettingsAcknowledged) for event in events
        ):
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.connection.flush()
        self._events_received(events)
        self.connection.flush()

    def _events_received(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is not UnknownFrameReceived:  # HTTP/2: ignore; grpclib raises
                self.processor.process(event)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        super().connection_lost(exc)

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self._close(
            f"no HTTP/2 handshake within {self._handshake_timeout:g} s",
            ErrorCodes.SETTINGS_TIMEOUT,
        )

    def _close(self, reason: str, goaway: ErrorCodes | None = None) -> None:
        """Send ``goaway`` (if h2 has not queued one) and what else is queued, then close."""
        if goaway is not None:
            with contextlib.suppress(H2ProtocolError):  # one GOAWAY was sent already
                grpclib_internals.h2_connection(self.connection).close_connection(goaway)
        host, port, *_ = self.connection.get_peer().addr() or ("?", "?")
        logger.debug("Closing the HTTP/2 connection from %s:%s: %s", host, port, reason)
        self.connection.flush()
        self.processor.close(reason)


class _BulkProtocol(_LeanProtocol, asyncio.BufferedProtocol):
    """Reads as much as the socket holds, up to ``read_bytes``, in each turn of the loop.

    asyncio hands a buffered protocol's own buffer to ``recv_into``; the buffer is
    allocated at the first read (its pages are committed only as far as data reaches).
    It is a memoryview because asyncio's TLS layer fills slices of it, and a slice of a
    bytearray would be a copy.

    A call whose request body is still arriving after ``LARGE_BODY`` bytes is a large one:
    each read of its body holds the fleet's reading (``precedence``), and the hold is
    released when the call has answered, so that its response is not written behind the
    fleet's backlog. A small call (a ServerApp's pull of replies: ids only) holds nothing,
    even when its body spans two reads.
    """

    def __init__(self, profile: ConnectionProfile, precedence: Precedence, *args: Any) -> None:
        super().__init__(*args)
        self._profile = profile
        self._precedence = precedence
        self._buffer: memoryview | None = None
        #: Streams whose request body is still arriving (no END_STREAM or reset yet), and
        #: the bytes of it received so far.
        self._receiving: dict[int, int] = {}
        #: The tasks of the large calls that have not answered yet.
        self._large_calls: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._profile.write_buffer_bytes:
            cast(asyncio.WriteTransport, transport).set_write_buffer_limits(
                high=self._profile.write_buffer_bytes
            )

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buffer is None:
            self._buffer = memoryview(bytearray(self._profile.read_bytes))
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        assert self._buffer is not None
        self.data_received(bytes(self._buffer[:nbytes]))
        if not self._receiving:
            return
        for stream, task in grpclib_internals.call_tasks(cast(Handler, self.handler)).items():
            large = self._receiving.get(cast(int, stream.id), 0) >= LARGE_BODY
            if large and task not in self._large_calls:
                self._large_calls.add(task)
                task.add_done_callback(self._large_call_answered)
        if self._large_calls:
            self._precedence.hold(self)

    def _events_received(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RequestReceived) and event.stream_ended is None:
                self._receiving[event.stream_id] = 0
            elif isinstance(event, DataReceived) and event.stream_id in self._receiving:
                self._receiving[event.stream_id] += len(event.data)
            elif isinstance(event, (StreamEnded, StreamReset)):
                self._receiving.pop(event.stream_id, None)
        super()._events_received(events)

    def _large_call_answered(self, task: asyncio.Task[None]) -> None:
        self._large_calls.discard(task)
        if not self._large_calls:
            self._precedence.release(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._receiving.clear()
        self._large_calls.clear()
        self._precedence.release(self)
        super().connection_lost(exc)


class LeanServer(Server):
    """A grpclib ``Server`` whose idle connections keep no finished calls.

    A connection that has not completed the HTTP/2 handshake (sent the preface and its
    SETTINGS, and acknowledged ours) ``handshake_timeout`` seconds after it was accepted
    is closed: without that, sockets that never speak HTTP/2 are held forever.

    ``listen`` is its ``start``: it accepts through a ``PausingListener``, which stops
    accepting, quietly, while the process is out of file descriptors.
    """

    def __init__(
        self,
        handlers: Collection[Any],
        profile: ConnectionProfile = FLEET,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(
            list(handlers),
            config=Configuration(
                http2_connection_window_size=profile.window_bytes,
                http2_stream_window_size=profile.window_bytes,
            ),
        )
        self._profile = profile
        self.handshake_timeout = handshake_timeout
        self._configs = grpclib_internals.connection_configs(self)
        self._protocols: weakref.WeakSet[_LeanProtocol] = weakref.WeakSet()
        #: The listening gate's, once ``listen`` is called; until then one that never holds.
        self._precedence = Precedence(lambda: False)
        # grpclib has h2 decode headers as ASCII, and a byte beyond it escaped h2 and
        # grpclib as UnicodeDecodeError (asyncio logged a fatal error with a traceback and
        # dropped the connection). Latin-1 decodes every byte, ASCII as ASCII, so such a
        # header reaches ``_ForgetfulHandler.accept``, which resets its stream alone.
        self._configs[1].header_encoding = "latin-1"
        grpclib_internals.install_protocol_factory(self, self._new_protocol)

    async def listen(
        self, address: Address, gate: CallGate, ssl: _ssl.SSLContext | None = None
    ) -> None:
        """Bind ``address`` and accept on it until ``close``."""
        if grpclib_internals.started(self):
            raise RuntimeError("Server is already started")
        sockets = await bind(address)
        self._precedence = gate.precedence
        grpclib_internals.serve_on(
            self,
            lambda protocols: PausingListener(
                f"Listener on {address}",
                sockets,
                protocols,
                gate,
                ssl,
                yields=self._profile.yields,
            ),
        )

    def close(self) -> None:
        """Stop accepting, cancel the calls in flight, and close every connection.

        grpclib leaves the connections open, so a cancelled call's client would wait for
        an answer as long as the process lives (an embedding host's, for one).
        """
        super().close()
        for protocol in list(self._protocols):
            if hasattr(protocol, "connection"):  # not if its TLS handshake is under way
                protocol._close("the server is closing")  # no GOAWAY, as if we had exited

    def _new_protocol(self) -> H2Protocol:
        """A new connection's protocol, and its handler."""
        handler = grpclib_internals.new_handler(self, _ForgetfulHandler)
        config, h2_config = self._configs
        protocol: _LeanProtocol
        if self._profile.read_bytes:
            protocol = _BulkProtocol(
                self._profile,
                self._precedence,
                handler,
                config,
                h2_config,
                self.handshake_timeout,
            )
        else:
            protocol = _LeanProtocol(handler, config, h2_config, self.handshake_timeout)
        self._protocols.add(protocol)
        return protocol


async def serve_grpc(
    handlers: Collection[Any],
    address: Address,
    banner: str,
    ssl: _ssl.SSLContext | None = None,
    gate: CallGate | None = None,
    *,
    profile: ConnectionProfile = FLEET,
    task_status: TaskStatus[None],
) -> None:
    """Listen on ``address`` until cancelled; report ``started`` once listening.

    A port that cannot be bound raises here, before ``started``, so the supervisor sees
    the listener's crash with its cause. With ``ssl`` every connection must be TLS; the
    ``gate``'s metrics count the listener's pauses (both positional, because the
    supervisor passes arguments positionally). ``profile`` fits the connections to their
    callers.
    """
    server = LeanServer(handlers, profile)
    await server.listen(address, gate or CallGate(), ssl)
    logger.info("%s on %s", banner, address)
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            server.close()
            await server.wait_closed()
