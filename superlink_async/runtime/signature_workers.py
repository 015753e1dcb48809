"""Signature checks in worker processes, while the event loop is behind.

Checking one P-384 signature costs about 0.66 ms of CPU with the GIL held; on the event
loop that caps one SuperLink near 700 calls/s. ``WorkerSignatures`` hands the checks
(``superlink_async.services.signatures.is_signed_by``) to worker processes over their
stdin/stdout pipes while the loop serves other calls.

It does so only while the loop is behind (a timer of the loop fires late): a check on the
loop costs 0.66 ms and no wait, a check in a worker costs the loop a third of that but
waits for the worker and for the loop's next turn. Measured on 2 CPUs shared with the load
generator: every check in a worker made an idle fleet's median call 2-4x slower, while a
round of 1,000 nodes (loop saturated) finished 15-25 % sooner; spilling only while behind
keeps the round's gain without slowing a loop that keeps up.

The protocol is as small as it can be, because every step of a round trip that waits for
the next turn of a busy event loop adds that turn's length (several ms under load) to the
call: a check is written straight to a worker's pipe (no task, no lock), and the answer
resolves its future from the pipe's data callback. A worker checks whatever its pipe
holds at once and answers in one write, so checks batch themselves under load.

A worker runs ``python -m superlink_async.runtime.signature_workers``; it loads the check
and nothing of the server stack (no state backend, no protobuf modules).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import struct
import sys
from typing import cast

import anyio
from anyio.abc import TaskStatus

from superlink_async.logs import logger
from superlink_async.loop_lag import LoopLag
from superlink_async.services.signatures import is_signed_by

#: A check: its id, then the lengths of the key, the signed data and the signature.
_REQUEST = struct.Struct(">IHHH")
#: An answer: the check's id and whether the signature is valid.
_ANSWER = struct.Struct(">I?")
#: What a worker writes once it has loaded what checking needs.
_READY = b"ready\n"
#: How long a worker may take to start before we check on the loop instead.
_START_TIMEOUT = 30.0
#: How long stopping workers may take after their stdin closed, before they are killed
#: (the SuperLink passes its workers stage's bound instead).
_STOP_TIMEOUT = 2.0
#: Checks go to the workers while the measured loop lag (``LoopLag.level``) is at least this.
SPILL_LAG = 0.02


class _WorkerGone(Exception):
    """The worker ended before it answered."""


class _Worker(asyncio.SubprocessProtocol):
    """Our end of one worker's pipes: requests out on stdin, answers in on stdout."""

    def __init__(self) -> None:
        #: Set by the worker's handshake, or when it ends first (``exited`` tells which),
        #: so that start-up waits on one event.
        self.ready = asyncio.Event()
        self.waiting: dict[int, asyncio.Future[bool]] = {}
        self.transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._received = bytearray()
        self.exited = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's, only alike.
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self._stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))

    @property
    def alive(self) -> bool:
        """Ready and not gone: it may be sent checks."""
        return self.ready.is_set() and not self.exited.is_set()

    def send(self, ident: int, public_key_pem: bytes, data: bytes, signature: bytes) -> None:
        """Write one check to the worker's stdin; its answer resolves ``waiting[ident]``."""
        assert self._stdin is not None
        header = _REQUEST.pack(ident, len(public_key_pem), len(data), len(signature))
        self._stdin.writelines((header, public_key_pem, data, signature))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if not self.ready.is_set():
            if not data.startswith(_READY):
                return  # anything before the handshake is not ours to parse
            self.ready.set()
            data = data[len(_READY) :]
        self._received += data
        whole = len(self._received) - len(self._received) % _ANSWER.size
        for ident, valid in _ANSWER.iter_unpack(self._received[:whole]):
            waiter = self.waiting.pop(ident, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(valid)
        del self._received[:whole]

    def process_exited(self) -> None:
        self.exited.set()
        self.ready.set()
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_exception(_WorkerGone())
        self.waiting.clear()

    def close_stdin(self) -> None:
        """End of requests: the worker answers what it has and exits."""
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.close()


class WorkerSignatures:
    """Checks in ``workers`` processes while ``run`` runs and the loop is behind.

    ``lag`` is the loop's measured lateness (its own task keeps it current); ``spill_lag``:
    how late (seconds) the loop must run for checks to go to the workers; 0 sends every
    check there. ``stop_timeout``: how long stopping waits for the workers to exit.
    """

    def __init__(
        self,
        workers: int,
        lag: LoopLag,
        spill_lag: float = SPILL_LAG,
        *,
        stop_timeout: float = _STOP_TIMEOUT,
    ) -> None:
        if workers < 1:
            raise ValueError("WorkerSignatures needs at least one worker")
        self.workers = workers
        self.spill_lag = spill_lag
        self.stop_timeout = stop_timeout
        self._lag = lag
        self._running: list[_Worker] = []
        self._idents = itertools.count(1)

    @property
    def behind(self) -> bool:
        """Whether the loop was late enough at its last measurement to hand checks out.

        Always with ``spill_lag`` 0: asyncio may fire a timer a clock tick early, so a
        measured lag can be a hair below 0.
        """
        return self.spill_lag <= 0 or self._lag.level >= self.spill_lag

    async def is_signed_by(self, public_key_pem: bytes, data: bytes, signature: bytes) -> bool:
        """See ``SignatureChecker``; the least busy worker checks it if the loop is behind."""
        live = [worker for worker in self._running if worker.alive] if self.behind else []
        if not live:
            return is_signed_by(public_key_pem, data, signature)
        worker = min(live, key=lambda candidate: len(candidate.waiting))
        ident = next(self._idents) & 0xFFFFFFFF
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        worker.waiting[ident] = answer
        worker.send(ident, public_key_pem, data, signature)
        try:
            return await answer
        except _WorkerGone:
            return is_signed_by(public_key_pem, data, signature)
        finally:
            worker.waiting.pop(ident, None)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, serve until cancelled, then stop them (a supervised task).

        Workers start before we report ready, so the first calls do not wait for a
        Python to start and the workers' memory is part of the empty server. A worker
        that dies is not replaced: its checks, and all later ones once none is left,
        are made on the loop, with a warning.
        """
        loop = asyncio.get_running_loop()
        workers: list[_Worker] = []
        try:
            for _ in range(self.workers):
                _, worker = await loop.subprocess_exec(
                    _Worker,
                    sys.executable,
                    "-m",
                    __name__,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=None,
                )
                workers.append(worker)
            with anyio.move_on_after(_START_TIMEOUT):
                for worker in workers:
                    await worker.ready.wait()
            self._running = [worker for worker in workers if worker.alive]
            if len(self._running) < len(workers):
                logger.warning("A signature worker did not start; checking on the event loop")
            task_status.started()
            async with anyio.create_task_group() as watchers:
                for worker in self._running:
                    watchers.start_soon(self._warn_on_exit, worker)
                await anyio.sleep_forever()
        finally:
            self._running = []
            with anyio.CancelScope(shield=True):
                await _stop(workers, self.stop_timeout)

    @staticmethod
    async def _warn_on_exit(worker: _Worker) -> None:
        await worker.exited.wait()
        logger.warning("A signature worker process ended; its share is checked on the loop")


async def _stop(workers: list[_Worker], patience: float) -> None:
    """Close their stdin (they exit at EOF); kill whichever is left after ``patience`` s."""
    for worker in workers:
        worker.close_stdin()
    with anyio.move_on_after(patience):
        for worker in workers:
            await worker.exited.wait()
    for worker in workers:
        if worker.transport is not None:
            if not worker.exited.is_set():
                worker.transport.kill()
            worker.transport.close()


#: Below this many CPUs the checks stay on the event loop by default.
MIN_CPUS_FOR_WORKERS = 4


def default_workers(cpus: int | None = None) -> int:
    """One worker per CPU but the loop's, on machines with at least four CPUs.

    On two CPUs shared with the load generator (``make bench``), one worker made a saturated
    1,000-node round 25 % shorter (SQLite: 12.1-14.8 s against 18.0-18.6 s), but the idle
    fleet paid for it: ~35 MiB for the worker, ~10 MiB more in the SuperLink per 1,000 idle
    nodes (not pinned down; calls waiting for answers are the likely holders) and no better
    p99. There it is an operator's choice.
    """
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return cpus - 1 if cpus >= MIN_CPUS_FOR_WORKERS else 0


def serve_checks(requests: int = 0, answers: int = 1) -> None:
    """A worker's life: answer every check that arrives on ``requests`` until EOF.

    Whatever one read returns is checked before answering, in one write: under load
    that is a batch, and the pipe round trips stay few.
    """
    # Ctrl-C reaches the whole process group; the SuperLink stops us by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _write_all(answers, _READY)
    pending = bytearray()
    while chunk := os.read(requests, 1 << 20):
        pending += chunk
        replies = []
        offset = 0
        while len(pending) - offset >= _REQUEST.size:
            ident, key_size, data_size, signature_size = _REQUEST.unpack_from(pending, offset)
            end = offset + _REQUEST.size + key_size + data_size + signature_size
            if end > len(pending):
                break
            start = offset + _REQUEST.size
            key = bytes(pending[start : start + key_size])
            data = bytes(pending[start + key_size : start + key_size + data_size])
            signature = bytes(pending[start + key_size + data_size : end])
            replies.append(_ANSWER.pack(ident, is_signed_by(key, data, signature)))
            offset = end
        del pending[:offset]
        if replies:
            _write_all(answers, b"".join(replies))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    serve_checks()
