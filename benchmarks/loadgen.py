"""Simulated SuperNodes that behave like flwr 1.18.0's, spread over worker processes.

Each node opens its own connection (unless told to share), calls CreateNode with
``ping_interval=30``, pings every 17.5-22.5 s, pulls every 3 s while idle and, when an
instruction arrives, calls GetRun (once per run), GetFab and PushMessages, then pulls again
at once, exactly as a SuperNode's loop does. Every call carries the node-auth metadata.
Failed calls are retried, or end the node, by flwr 1.18.0's rules (see :class:`SimNode`).

A worker process runs one event loop with its share of the nodes and records, per call, the
method, when it started, the replica it went to, and its latency or status code. With several
Fleet addresses (replicas of one federation) each new node takes the next one in turn. The
coordinator (:class:`Fleet`) drives the workers over pipes: grow the fleet, collect a
measurement window, detach.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import NoReturn, TypeVar

import grpc

from benchmarks import messages
from benchmarks.identity import NodeIdentity
from benchmarks.superlink import cpu_seconds
from benchmarks.wire import FleetStub, open_channel
from superlink_async.wire import fab_pb2, fleet_pb2, message_pb2, node_pb2, run_pb2

#: What a 1.18.0 SuperNode sends (flwr.common.constant.PING_DEFAULT_INTERVAL).
PING_INTERVAL = 30.0
#: A SuperNode pings every (30 - 5) * (0.8 +- 0.1) seconds, with a 5 s call timeout.
PING_TIMEOUT = 5.0
#: A SuperNode sleeps 3 s after a pull that brought nothing.
PULL_PERIOD = 3.0
#: SuperNodes set no deadline on other calls; this only bounds a stuck call.
CALL_TIMEOUT = 60.0
#: A SuperNode retries UNAVAILABLE after 1, 2, 4, ... s capped at this, each jittered
#: (flwr.common.constant.MAX_RETRY_DELAY).
MAX_RETRY_DELAY = 20.0
_LAG_PERIOD = 0.1

Request = TypeVar("Request")
Response = TypeVar("Response")


# --- commands from the coordinator and the workers' answers ------------------------------


@dataclass(frozen=True)
class Attach:
    """Point new nodes at these Fleet APIs, one after the other (each node keeps its own)."""

    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Grow:
    """Start ``count`` more nodes evenly over ``spread`` seconds, ``phase`` into the first gap.

    ``per_connection`` > 1 lets that many nodes share a channel (and its connection).
    """

    count: int
    spread: float
    phase: float
    timeout: float
    per_connection: int


@dataclass(frozen=True)
class Collect:
    """Hand over what happened to calls started in ``[start, end)`` (monotonic clock)."""

    start: float
    end: float
    grace: float


@dataclass(frozen=True)
class Detach:
    """Drop every node and its connection (no DeleteNode: the server is stopped next)."""


@dataclass(frozen=True)
class Shutdown:
    """Detach and end the worker process."""


Command = Attach | Grow | Collect | Detach | Shutdown


@dataclass
class Window:
    """Calls started in one measurement window, possibly merged over workers."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    #: Failed calls started since the previous window and before this one (the ramp).
    earlier_errors: Counter[str] = field(default_factory=Counter)
    loop_lags: list[float] = field(default_factory=list)
    #: Calls of the window (answered, failed or still running) by the replica they went to.
    replica_calls: Counter[int] = field(default_factory=Counter)
    nodes: int = 0
    lost_nodes: int = 0

    def merge(self, other: Window) -> None:
        """Add another worker's window to this one."""
        for method, values in other.latencies.items():
            self.latencies.setdefault(method, []).extend(values)
        self.errors.update(other.errors)
        self.earlier_errors.update(other.earlier_errors)
        self.loop_lags.extend(other.loop_lags)
        self.replica_calls.update(other.replica_calls)
        self.nodes += other.nodes
        self.lost_nodes += other.lost_nodes


@dataclass(frozen=True)
class Grown:
    """How many of the requested nodes registered."""

    created: int
    failed: int


# --- the pipe between coordinator and workers --------------------------------------------


async def receive(conn: Connection) -> object:
    """The next object from a pipe, awaited on the event loop instead of a thread."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


# --- one worker process --------------------------------------------------------------------


class Recorder:
    """Every call's start, method and outcome, kept until a window collects it."""

    def __init__(self) -> None:
        #: (started, method, latency, replica) and (started, method and code, replica).
        self._done: list[tuple[float, str, float, int]] = []
        self._failed: list[tuple[float, str, int]] = []
        self._lags: list[tuple[float, float]] = []
        self._inflight: dict[int, tuple[float, str, int]] = {}
        self._tokens = 0
        #: While a window is being collected: its calls still running, and who waits.
        self._awaited: set[int] = set()
        self._drained = asyncio.Event()
        #: Calls started before this were handed over already (late ones with their age).
        self._horizon = 0.0

    def begin(self, method: str, replica: int) -> int:
        """Note a call's start; returns the token to end it with."""
        self._tokens += 1
        self._inflight[self._tokens] = (time.monotonic(), method, replica)
        return self._tokens

    def end(self, token: int, code: grpc.StatusCode | None) -> None:
        """Note a call's outcome: ``None`` for OK, else its status code."""
        started, method, replica = self._inflight.pop(token)
        if token in self._awaited:
            self._awaited.discard(token)
            if not self._awaited:
                self._drained.set()
        if started < self._horizon:
            return
        if code is None:
            self._done.append((started, method, time.monotonic() - started, replica))
        else:
            self._failed.append((started, f"{method} {code.name}", replica))

    def clear(self) -> None:
        """Forget everything: the next server starts with a clean record."""
        self._done.clear()
        self._failed.clear()
        self._lags.clear()
        self._inflight.clear()

    async def watch_loop_lag(self) -> None:
        """Measure how late this loop wakes up: a busy generator inflates latencies."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(_LAG_PERIOD)
            self._lags.append((before, time.monotonic() - before - _LAG_PERIOD))

    async def collect(self, command: Collect) -> Window:
        """Wait (at most ``grace``) for the window's calls to end, then hand them over.

        A call still running after the grace period is counted with the time it has
        taken so far: a lower bound, far above any latency target.
        """
        self._awaited = {
            token for token, (started, _, _) in self._inflight.items() if started < command.end
        }
        if self._awaited:
            self._drained.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), command.grace)
            self._awaited = set()
        window = Window()
        now = time.monotonic()
        late = [
            (started, method, now - started, replica)
            for started, method, replica in self._inflight.values()
            if started < command.end
        ]
        for started, method, latency, replica in self._done + late:
            if command.start <= started < command.end:
                window.latencies.setdefault(method, []).append(latency)
                window.replica_calls[replica] += 1
        for started, name, replica in self._failed:
            if command.start <= started < command.end:
                window.errors[name] += 1
                window.replica_calls[replica] += 1
            elif started < command.start:
                window.earlier_errors[name] += 1
        window.loop_lags = [lag for at, lag in self._lags if command.start <= at < command.end]
        self._horizon = command.end
        self._done = [sample for sample in self._done if sample[0] >= command.end]
        self._failed = [sample for sample in self._failed if sample[0] >= command.end]
        self._lags = [sample for sample in self._lags if sample[0] >= command.end]
        return window


def retry_waits(max_delay: float | None) -> Iterator[float]:
    """Waits between retries as flwr 1.18.0 draws them: ``full_jitter`` of ``exponential``.

    ``exponential`` yields 1, 2, 4, ... s (capped at ``max_delay`` unless it is ``None``)
    and ``full_jitter`` waits a uniform share of each, from 0 to all of it.
    """
    delay = 1.0
    while True:
        yield random.uniform(0, delay)
        delay = delay * 2 if max_delay is None else min(delay * 2, max_delay)


class SimNode:
    """One SuperNode's Fleet behaviour, minus the ClientApp (replies are built at once).

    Failures are handled by flwr 1.18.0's rules (``grpc_rere_client/connection.py``,
    ``client/app.py``, ``client/heartbeat.py``): UNAVAILABLE is retried without end;
    PERMISSION_DENIED (``RunNotRunningException``) drops the instruction at hand and the
    node pulls again, except on CreateNode; any other code ends the node (it is lost).
    Pings retry every error and never end the node.
    """

    def __init__(self, stub: FleetStub, replica: int, recorder: Recorder) -> None:
        self._stub = stub
        self._replica = replica
        self._recorder = recorder
        self._identity = NodeIdentity()
        self._node = node_pb2.Node()
        self._runs: dict[int, run_pb2.Run] = {}

    async def live(self, registered: Callable[[bool], None]) -> bool:
        """Register, then ping and pull until cancelled; returns ``False`` when it gives up."""
        try:
            created = await self._call(
                "CreateNode",
                self._stub.create_node,
                fleet_pb2.CreateNodeRequest(ping_interval=PING_INTERVAL),
            )
        except grpc.aio.AioRpcError:
            registered(False)
            return False
        self._node = node_pb2.Node(node_id=created.node.node_id)
        registered(True)
        pinger = asyncio.create_task(self._ping_forever())
        try:
            await self._pull_forever()
        except grpc.aio.AioRpcError:
            return False
        finally:
            pinger.cancel()

    async def _call(
        self,
        method: str,
        call: grpc.aio.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
    ) -> Response:
        """A call through a SuperNode's ``RetryInvoker``: UNAVAILABLE retried, others raised.

        A SuperNode sets no deadline on these calls; :data:`CALL_TIMEOUT` only bounds a
        stuck one, which is then made again (the node would still be waiting) and is
        recorded as DEADLINE_EXCEEDED, but does not end the node. A DEADLINE_EXCEEDED
        that came sooner is the server's answer, which a SuperNode gives up on.
        """
        waits = retry_waits(MAX_RETRY_DELAY)
        while True:
            started = time.monotonic()
            try:
                return await self._attempt(method, call, request, CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                stuck = time.monotonic() - started >= CALL_TIMEOUT
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and stuck:
                    continue
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            await asyncio.sleep(next(waits))

    async def _attempt(
        self,
        method: str,
        call: grpc.aio.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        timeout: float,
    ) -> Response:
        """One signed call, recorded with its latency or status code."""
        metadata = self._identity.metadata()
        token = self._recorder.begin(method, self._replica)
        try:
            response = await call(request, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            self._recorder.end(token, error.code())
            raise
        except BaseException:
            self._recorder.end(token, grpc.StatusCode.CANCELLED)
            raise
        self._recorder.end(token, None)
        return response

    async def _ping_forever(self) -> NoReturn:
        """Ping at once, then every 17.5-22.5 s; the first pause is drawn from 0-17.5 s.

        Nodes started within seconds of each other would otherwise all ping in the same
        seconds; the random first pause spreads them like a fleet that has been up a while.
        """
        request = fleet_pb2.PingRequest(node=self._node, ping_interval=PING_INTERVAL)
        pause = (PING_INTERVAL - PING_TIMEOUT) * random.uniform(0, 0.7)
        while True:
            await self._ping_until_answered(request)
            await asyncio.sleep(pause)
            pause = (PING_INTERVAL - PING_TIMEOUT) * random.uniform(0.7, 0.9)

    async def _ping_until_answered(self, request: fleet_pb2.PingRequest) -> None:
        """A SuperNode's ping loop: any error retried, backoff uncapped, reset by success.

        A ping that timed out already waited its 5 s, which the next wait is shortened by.
        """
        waits = retry_waits(None)
        while True:
            try:
                await self._attempt("Ping", self._stub.ping, request, PING_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                wait = next(waits)
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    wait = max(wait - PING_TIMEOUT, 0.0)
                await asyncio.sleep(wait)
            else:
                return

    async def _pull_forever(self) -> NoReturn:
        request = fleet_pb2.PullMessagesRequest(node=self._node)
        while True:
            try:
                pulled = await self._call("PullMessages", self._stub.pull_messages, request)
                if pulled.messages_list:
                    await self._answer(pulled.messages_list[0])
                    continue
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                continue  # the run is not running: the instruction is dropped, pull again
            await asyncio.sleep(PULL_PERIOD)

    async def _answer(self, ins: message_pb2.Message) -> None:
        run_id = ins.metadata.run_id
        if run_id not in self._runs:
            got = await self._call(
                "GetRun", self._stub.get_run, run_pb2.GetRunRequest(node=self._node, run_id=run_id)
            )
            self._runs[run_id] = got.run
        fab_request = fab_pb2.GetFabRequest(
            node=self._node, hash_str=self._runs[run_id].fab_hash, run_id=run_id
        )
        await self._call("GetFab", self._stub.get_fab, fab_request)
        push = fleet_pb2.PushMessagesRequest(
            node=self._node, messages_list=[messages.reply(self._node.node_id, ins)]
        )
        await self._call("PushMessages", self._stub.push_messages, push)


class Worker:
    """A worker process's share of the fleet, driven by commands from a pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._recorder = Recorder()
        self._nodes: set[asyncio.Task[bool]] = set()
        self._channels: list[grpc.aio.Channel] = []
        #: Per replica: the channel's stub new nodes share, and how many share it already.
        self._stubs: dict[int, tuple[FleetStub, int]] = {}
        self._addresses: tuple[str, ...] = ()
        self._started = 0
        self._lost = 0

    async def serve(self) -> None:
        """Answer commands until told to shut down."""
        watcher = asyncio.create_task(self._recorder.watch_loop_lag())
        try:
            while True:
                command = await receive(self._conn)
                if isinstance(command, Shutdown):
                    break
                self._conn.send(await self._execute(command))
        finally:
            watcher.cancel()
            await self._detach()

    async def _execute(self, command: object) -> object:
        if isinstance(command, Attach):
            self._addresses = command.addresses
            return None
        if isinstance(command, Grow):
            return await self._grow(command)
        if isinstance(command, Collect):
            window = await self._recorder.collect(command)
            window.nodes, window.lost_nodes = len(self._nodes), self._lost
            return window
        if isinstance(command, Detach):
            await self._detach()
            return None
        raise TypeError(f"unknown command {command!r}")

    def _next_stub(self, replica: int, per_connection: int) -> FleetStub:
        stub, users = self._stubs.get(replica, (None, 0))
        if stub is None or users >= per_connection:
            channel = open_channel(self._addresses[replica], own_connection=True)
            self._channels.append(channel)
            stub, users = FleetStub(channel), 0
        self._stubs[replica] = (stub, users + 1)
        return stub

    async def _grow(self, command: Grow) -> Grown:
        loop = asyncio.get_running_loop()
        outcomes: list[asyncio.Future[bool]] = []
        for index in range(command.count):
            outcome: asyncio.Future[bool] = loop.create_future()
            outcomes.append(outcome)
            delay = command.spread * (index + command.phase) / command.count
            task = asyncio.create_task(self._start_node(delay, command.per_connection, outcome))
            self._nodes.add(task)
            task.add_done_callback(self._forget)
        if outcomes:
            await asyncio.wait(outcomes, timeout=command.spread + command.timeout)
        created = sum(1 for outcome in outcomes if outcome.done() and outcome.result())
        return Grown(created=created, failed=command.count - created)

    async def _start_node(
        self, delay: float, per_connection: int, outcome: asyncio.Future[bool]
    ) -> bool:
        await asyncio.sleep(delay)
        replica = self._started % len(self._addresses)
        self._started += 1
        node = SimNode(self._next_stub(replica, per_connection), replica, self._recorder)
        return await node.live(outcome.set_result)

    def _forget(self, task: asyncio.Task[bool]) -> None:
        self._nodes.discard(task)
        if not task.cancelled() and task.exception() is None and not task.result():
            self._lost += 1

    async def _detach(self) -> None:
        for task in self._nodes:
            task.cancel()
        await asyncio.gather(*self._nodes, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in self._channels))
        self._channels.clear()
        self._stubs.clear()
        self._started, self._lost = 0, 0
        self._recorder.clear()


def worker_main(conn: Connection) -> None:
    """Entry point of a worker process (spawned: grpcio must not cross a fork)."""
    asyncio.run(Worker(conn).serve())


# --- the coordinator's side ------------------------------------------------------------------


class Fleet:
    """The simulated SuperNodes of all workers; an async context manager.

    ``max_connections`` is what the server can accept (its descriptor limit less a
    reserve): one connection per node while that lasts, then as few shared as fit.
    """

    def __init__(self, workers: int, max_connections: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes: list[BaseProcess] = []
        for _ in range(workers):
            ours, theirs = context.Pipe()
            self._pipes.append(ours)
            self._processes.append(context.Process(target=worker_main, args=(theirs,), daemon=True))
        self._max_connections = max_connections
        self._sizes = [0] * workers
        self.connections = 0

    @property
    def size(self) -> int:
        """Nodes started so far on the current SuperLink."""
        return sum(self._sizes)

    async def attach(self, addresses: tuple[str, ...]) -> None:
        """Direct the next nodes at ``addresses``, each node at the next one in turn.

        Workers alternate from the first address alike, so with an even share per worker
        the replicas get the same number of nodes.
        """
        await self._each([Attach(addresses)] * len(self._pipes))

    async def grow(self, total: int, spread: float, timeout: float) -> Grown:
        """Start nodes until ``total`` have been started, balanced over the workers."""
        new = max(0, total - self.size)
        room = self._max_connections - self.connections - len(self._pipes)
        if new and room <= 0:
            raise RuntimeError(f"no connection left for {new} more nodes")
        per_connection = max(1, math.ceil(new / room)) if new else 1
        shares = [0] * len(self._pipes)
        for _ in range(new):
            emptiest = min(range(len(shares)), key=lambda i: self._sizes[i] + shares[i])
            shares[emptiest] += 1
        for index, share in enumerate(shares):
            self._sizes[index] += share
            self.connections += math.ceil(share / per_connection)
        phases = [index / len(shares) for index in range(len(shares))]
        answers = await self._each(
            [
                Grow(share, spread, phase, timeout, per_connection)
                for share, phase in zip(shares, phases, strict=True)
            ]
        )
        grown = [answer for answer in answers if isinstance(answer, Grown)]
        return Grown(sum(g.created for g in grown), sum(g.failed for g in grown))

    async def collect(self, start: float, end: float, grace: float) -> Window:
        """All workers' calls started in ``[start, end)``."""
        merged = Window()
        for answer in await self._each([Collect(start, end, grace)] * len(self._pipes)):
            if isinstance(answer, Window):
                merged.merge(answer)
        return merged

    async def detach(self) -> None:
        """Drop every node."""
        await self._each([Detach()] * len(self._pipes))
        self._sizes = [0] * len(self._sizes)
        self.connections = 0

    def cpu_seconds(self) -> float:
        """CPU time all worker processes have used."""
        return sum(cpu_seconds(process.pid) for process in self._processes if process.pid)

    async def _each(self, commands: list[Command]) -> list[object]:
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        return list(await asyncio.gather(*(receive(pipe) for pipe in self._pipes)))

    async def __aenter__(self) -> Fleet:
        for process in self._processes:
            process.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for pipe in self._pipes:
            pipe.send(Shutdown())
        for process in self._processes:
            await asyncio.to_thread(process.join, 30)
            if process.is_alive():
                process.kill()


def offered_rate(nodes: int) -> float:
    """Calls per second an idle fleet of ``nodes`` SuperNodes makes at most."""
    return nodes * (1 / PULL_PERIOD + 1 / ((PING_INTERVAL - PING_TIMEOUT) * 0.8))
