"""A stand-in for ``flwr-serverapp --run-once`` that claims a run, sets it running and waits.

Launched by a SuperLink's scheduler as ``python serverapp_stand_in.py NOTE [--run-once
--serverappio-api-address HOST:PORT --insecure]``: it pulls ServerApp inputs from that
address until a run comes back (as flwr-serverapp does, faster), reports the run running,
appends ``<run id> <pid> <address>`` to NOTE, then sleeps until it is ended. So a test sees
which replica's child claimed which run, and whether that child is still alive.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from grpclib.client import Channel

from superlink_async.wire import run_pb2, serverappio_grpc, serverappio_pb2

#: Seconds between two PullServerAppInputs while nothing is there to claim.
PULL_EVERY = 0.05


async def claim_and_wait(note: Path, address: str) -> None:
    host, _, port = address.rpartition(":")
    channel = Channel(host, int(port))
    try:
        stub = serverappio_grpc.ServerAppIoStub(channel)
        while True:
            inputs = await stub.PullServerAppInputs(serverappio_pb2.PullServerAppInputsRequest())
            if inputs.HasField("run"):
                break
            await asyncio.sleep(PULL_EVERY)
        run_id = inputs.run.run_id
        await stub.UpdateRunStatus(
            run_pb2.UpdateRunStatusRequest(
                run_id=run_id, run_status=run_pb2.RunStatus(status="running")
            )
        )
        with note.open("a") as file:
            file.write(f"{run_id} {os.getpid()} {address}\n")
        await asyncio.Event().wait()
    finally:
        channel.close()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        claim_and_wait(
            Path(arguments[0]), arguments[arguments.index("--serverappio-api-address") + 1]
        )
    )
