"""Listening sockets whose accepting pauses, quietly, while the process is out of descriptors.

asyncio's own accept loop meets EMFILE with an ERROR and a traceback for every attempt,
up to the backlog (4,096 here) per wake-up: 52,547 of them, 21 MB of log in 10 s, with
established connections starved meanwhile. This loop stops accepting at the first
EMFILE (ENFILE, ENOBUFS, ENOMEM), logs one WARNING per episode, counts each pause
(``superlink_accept_paused_total``), and tries again after ``ACCEPT_RETRY_DELAY``; the
connections already open are served all along, and those waiting stay queued in the
kernel's backlog until they can be accepted. It uses only the loop's public socket API
(``add_reader``, ``connect_accepted_socket``), so it runs on asyncio and uvloop alike.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl as _ssl
from collections.abc import Callable

from superlink_async.config import Address
from superlink_async.logs import logger
from superlink_async.transports.gate import LISTEN_BACKLOG, CallGate

#: Seconds between attempts to accept again while out of descriptors.
ACCEPT_RETRY_DELAY = 0.5
#: Connections accepted per wake-up, so that one busy listener cannot hog the loop.
ACCEPTS_PER_WAKEUP = 64
#: What ``accept`` fails with while the process or system has no descriptor to spare.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


async def bind(address: Address) -> list[socket.socket]:
    """Listening sockets for ``address`` (every address its host resolves to), non-blocking.

    An empty host means every interface, as for ``loop.create_server``. A port that cannot
    be bound raises ``OSError`` naming it.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        address.host or None,
        address.port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, where in dict.fromkeys(infos):
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(where)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {where!r}: {exc.strerror}",
                ) from None
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class PausingListener:
    """Accepts on ``sockets`` for ``protocol_factory``; the ``asyncio.Server`` calls it needs.

    ``name`` labels its log lines and its pause count. With ``yields`` (a Fleet listener)
    its connections stop being read while a bulk upload arrives (``CallGate.precedence``).
    """

    def __init__(
        self,
        name: str,
        sockets: list[socket.socket],
        protocol_factory: ProtocolFactory,
        gate: CallGate,
        tls: _ssl.SSLContext | None = None,
        *,
        yields: bool = False,
    ) -> None:
        self._name = name
        self._yields = yields
        self._sockets = sockets
        self._factory = protocol_factory
        self._gate = gate
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task[object]] = set()
        self._retries: dict[socket.socket, asyncio.TimerHandle] = {}
        self._pauses = 0
        self._closed = False
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (``asyncio.Server.sockets``)."""
        return tuple(self._sockets)

    def close(self) -> None:
        """Stop accepting and close the listening sockets; open connections stay."""
        if self._closed:
            return
        self._closed = True
        for retry in self._retries.values():
            retry.cancel()
        for sock in self._sockets:
            if sock not in self._retries:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._retries.clear()
        for handshake in self._handshakes:
            handshake.cancel()

    async def wait_closed(self) -> None:
        """Wait for the TLS handshakes that were under way when it closed."""
        if self._handshakes:
            await asyncio.wait(self._handshakes)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                connection, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_DESCRIPTORS:
                    raise  # the loop logs it; the listener carries on
                self._pause(sock, exc)
                return
            self._serve(connection)
        if self._pauses:
            logger.info(
                "%s accepts connections again (it paused %d time(s))", self._name, self._pauses
            )
            self._pauses = 0

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        """Stop watching ``sock`` until ``ACCEPT_RETRY_DELAY`` has passed; warn once per episode."""
        if not self._pauses:
            logger.warning(
                "%s is out of file descriptors (%s): not accepting new connections until "
                "some close; open connections are still served",
                self._name,
                exc.strerror,
            )
        self._pauses += 1
        self._gate.accept_paused(self._name)
        self._loop.remove_reader(sock.fileno())
        self._retries[sock] = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        del self._retries[sock]
        self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _serve(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        handshake = self._loop.create_task(self._connect(connection))
        self._handshakes.add(handshake)
        handshake.add_done_callback(self._handshakes.discard)

    async def _connect(self, connection: socket.socket) -> object:
        """Hand the socket to a new protocol (after the TLS handshake, with ``tls``)."""
        try:
            transport, protocol = await self._loop.connect_accepted_socket(
                self._factory, connection, ssl=self._tls
            )
        except (OSError, asyncio.TimeoutError) as exc:
            # A client that leaves or fails its TLS handshake is its own business.
            logger.debug("%s: connection not established: %s", self._name, exc)
            connection.close()
            return None
        if self._yields:
            self._gate.precedence.enlist(transport)
        return transport, protocol
