"""Several replicas of the SuperLink on one PostgreSQL database, behind HAProxy.

Each replica is a :class:`LocalFederation` of its own (one SuperLink process, its own ports,
log and ServerApp children, no SuperNode); the SuperNodes dial the balancer, which sends
each of their calls to the next replica. The ``flwr`` CLI talks to one replica at a time, as
an operator picking a replica would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path

import anyio
from grpclib.client import Channel

from superlink_async.testing import FlowerApp, FlowerCli, LocalFederation, ManagedProcess
from superlink_async.testing.balancer import Balancer
from superlink_async.testing.processes import StartsAndCloses
from superlink_async.wire import exec_grpc, exec_pb2

#: What our scheduler logs each time it starts a ServerApp child.
LAUNCH_LINE = "Launching flwr-serverapp subprocess"
#: What our Fleet service logs each time a SuperNode registers.
REGISTERED_LINE = "[Fleet.CreateNode] Created node_id="
FLEET = "fleet"


class Replicas(StartsAndCloses):
    """Replicas by id (each started with its own extra flags), the balancer and SuperNodes.

    Use it as a context manager: afterwards every process it started is gone.
    """

    def __init__(
        self,
        workdir: Path,
        superlink_command: Sequence[str],
        database_url: str,
        replica_args: Mapping[str, Sequence[str]],
        *,
        num_supernodes: int = 2,
    ) -> None:
        self.workdir = workdir
        self.replicas = {
            replica_id: LocalFederation(
                workdir / replica_id,
                superlink_command,
                num_supernodes=0,
                superlink_args=["--database", database_url, *args],
            )
            for replica_id, args in replica_args.items()
        }
        self.balancer = Balancer(
            workdir / "haproxy",
            {
                FLEET: {
                    replica_id: federation.ports.address(federation.ports.fleet)
                    for replica_id, federation in self.replicas.items()
                }
            },
        )
        self.num_supernodes = num_supernodes
        self.supernodes: list[ManagedProcess] = []

    def start(self) -> None:
        """Every replica, then the balancer, then the SuperNodes dialling it."""
        for federation in self.replicas.values():
            federation.start()
        self.balancer.start()
        first = next(iter(self.replicas.values()))
        for _ in range(self.num_supernodes):
            # The first replica's federation keeps them: closing it ends them first.
            node = first.start_supernode(fleet_address=self.balancer.address(FLEET))
            self.supernodes.append(node)

    def __getitem__(self, replica_id: str) -> LocalFederation:
        return self.replicas[replica_id]

    def cli(self, replica_id: str, app: FlowerApp) -> FlowerCli:
        """The ``flwr`` CLI against that replica's Exec API."""
        return self.replicas[replica_id].cli(app)

    def launches(self) -> dict[str, int]:
        """Replica id to how many ServerApp children it launched (all its processes)."""
        return self._count(LAUNCH_LINE)

    def registrations(self) -> int:
        """How many times a SuperNode registered, through any replica."""
        return sum(self._count(REGISTERED_LINE).values())

    def _count(self, line: str) -> dict[str, int]:
        return {
            replica_id: sum(superlink.output().count(line) for superlink in federation.superlinks)
            for replica_id, federation in self.replicas.items()
        }

    def serving(self) -> dict[str, int]:
        """Replica id to its live ``flwr-serverapp`` processes."""
        return {
            replica_id: len(federation.serverapp_processes())
            for replica_id, federation in self.replicas.items()
        }

    def run_details(self, replica_id: str, run_id: int) -> str:
        """The run's status details as that replica's Exec API lists them (``flwr ls`` hides
        them)."""
        return anyio.run(self._run_details, replica_id, run_id)

    async def _run_details(self, replica_id: str, run_id: int) -> str:
        ports = self.replicas[replica_id].ports
        with closing(Channel("127.0.0.1", ports.exec)) as channel:
            listed = await exec_grpc.ExecStub(channel).ListRuns(
                exec_pb2.ListRunsRequest(run_id=run_id)
            )
        return str(listed.run_dict[run_id].status.details)

    def tails(self) -> str:
        """The end of every log (replicas, SuperNodes, HAProxy), for failure reports."""
        return "\n".join(
            [*(federation.tails() for federation in self.replicas.values()), self.balancer.tail()]
        )

    def close(self) -> None:
        """End the SuperNodes and replicas (the first replica's federation first), then HAProxy."""
        try:
            for federation in self.replicas.values():
                federation.close()
        finally:
            self.balancer.close()
