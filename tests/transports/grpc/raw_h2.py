"""A raw HTTP/2 client on a real socket (h2): sends the bytes a test asks for, as a peer would.

grpclib's own client refuses to send most of what hostile peers send (truncated messages,
undecodable metadata, non-ASCII header values), so wire tests speak HTTP/2 themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

#: A guard against a server that never answers: a hung test fails instead of waiting forever.
NO_ANSWER_AFTER = 10.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Header = tuple[bytes | str, bytes | str]


@dataclass
class Answer:
    """What the server said on one stream, or on the connection instead."""

    headers: dict[str, str] = field(default_factory=dict)
    reset_code: int | None = None
    goaway_code: int | None = None

    @property
    def grpc_status(self) -> int | None:
        """The gRPC status code (from the trailers, or the headers of a trailers-only answer)."""
        value = self.headers.get("grpc-status")
        return None if value is None else int(value)

    @property
    def grpc_message(self) -> str | None:
        """The status message, as sent (percent-encoded)."""
        return self.headers.get("grpc-message")


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def request_headers(path: str, metadata: Sequence[Header] = ()) -> list[Header]:
    """The headers a gRPC client sends for a unary call to ``path``, then ``metadata``."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *metadata,
    ]


class RawH2Client:
    """One HTTP/2 connection; header validation off, so any byte can be sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.goaway_code: int | None = None
        #: Whether h2's answers (SETTINGS acknowledgements) are sent: not before ``handshake``.
        self.answering = False
        self.closed_by_server = False

    async def handshake(self) -> None:
        """Send the preface and SETTINGS (h2 acknowledges the server's as they arrive)."""
        self.h2.initiate_connection()
        self.answering = True
        await self.flush()

    async def flush(self) -> None:
        """Send whatever h2 has queued."""
        self._writer.write(self.h2.data_to_send())
        await self._writer.drain()

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are, past h2."""
        self._writer.write(data)
        await self._writer.drain()

    def end_sending(self) -> None:
        """Half-close: the server reads EOF after what was sent."""
        self._writer.write_eof()

    async def call(self, path: str, body: bytes, metadata: Sequence[Header] = ()) -> Answer:
        """Send one request (``body`` as DATA, then END_STREAM) and read the answer to it."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, request_headers(path, metadata))
        self.h2.send_data(stream_id, body, end_stream=True)
        await self.flush()
        return await self.answer(stream_id)

    async def answer(self, stream_id: int) -> Answer:
        """Read until ``stream_id`` ends or is reset, or the server ends the connection."""
        answer = Answer()
        while not self.closed_by_server:
            for event in await self._events():
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    if event.stream_id == stream_id:
                        answer.headers.update(_as_text(event.headers))
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    return answer
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    answer.reset_code = event.error_code
                    return answer
        answer.goaway_code = self.goaway_code
        return answer

    async def wait_closed(self) -> int | None:
        """Read until the server closes the connection; its GOAWAY's error code, if it sent one."""
        while not self.closed_by_server:
            await self._events()
        return self.goaway_code

    async def _events(self) -> list[h2.events.Event]:
        try:
            data = await asyncio.wait_for(self._reader.read(65536), NO_ANSWER_AFTER)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed_by_server = True
            return []
        events = self.h2.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.goaway_code = event.error_code
        if self.answering:
            with contextlib.suppress(ConnectionError):
                await self.flush()  # our acknowledgements; the server may be gone already
        return events

    def close(self) -> None:
        """Close our end."""
        self._writer.close()


def _as_text(headers: Sequence[tuple[bytes | str, bytes | str]] | None) -> dict[str, str]:
    return {
        (name.decode() if isinstance(name, bytes) else name): (
            value.decode() if isinstance(value, bytes) else value
        )
        for name, value in headers or ()
    }


@asynccontextmanager
async def raw_connection(port: int, *, handshake: bool = True) -> AsyncIterator[RawH2Client]:
    """A connection to 127.0.0.1:``port``, by default past the HTTP/2 handshake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RawH2Client(reader, writer)
    try:
        if handshake:
            await client.handshake()
        yield client
    finally:
        client.close()
