"""The wire layer is flwr 1.18.0's contract: identical descriptors, any supported protobuf."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.proto import message_pb2 as theirs

from superlink_async.wire import message_pb2 as ours
from superlink_async.wire.relocate import relocate_source

PROTO_NAMES = [
    "node",
    "error",
    "fab",
    "log",
    "recorddict",
    "transport",
    "message",
    "run",
    "fleet",
    "grpcadapter",
    "serverappio",
    "exec",
    "simulationio",
]
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", PROTO_NAMES)
def test_descriptor_is_byte_identical_to_flwr_1_18(name: str) -> None:
    """Byte-identical descriptors are what lets both load into one process."""
    ours = importlib.import_module(f"superlink_async.wire.{name}_pb2")
    reference = importlib.import_module(f"flwr.proto.{name}_pb2")
    assert ours.DESCRIPTOR.serialized_pb == reference.DESCRIPTOR.serialized_pb


def test_messages_cross_between_our_modules_and_flwrs() -> None:
    """A message serialized by one side parses on the other with every field intact."""
    message = ours.Message()
    message.metadata.run_id = 2**64 - 1
    message.metadata.message_type = "train.fit"
    message.content.configs["c"].data["x"].sint64 = -3
    parsed = theirs.Message.FromString(message.SerializeToString())
    assert parsed.metadata.run_id == 2**64 - 1
    assert parsed.content.configs["c"].data["x"].sint64 == -3


def test_relocation_points_imports_at_our_package() -> None:
    generated = "from flwr.proto import node_pb2 as x\nimport flwr.proto.fleet_pb2\n"
    assert relocate_source(generated) == (
        "from superlink_async.wire import node_pb2 as x\nimport superlink_async.wire.fleet_pb2\n"
    )


def test_no_generated_module_imports_flwr() -> None:
    """The wire layer must not depend on the flwr package it mirrors."""
    wire = REPO / "superlink_async" / "wire"
    flwr_import = re.compile(r"^\s*(from|import) flwr\b", re.MULTILINE)
    for module in [*wire.glob("*_pb2.py"), *wire.glob("*_grpc.py")]:
        assert not flwr_import.search(module.read_text()), module.name


@pytest.mark.parametrize("protobuf", ["protobuf==4.21.12", "protobuf"])
def test_generated_code_runs_on_oldest_and_newest_protobuf(
    protobuf: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """flwr 1.18 allows protobuf 4.21-4.x; users of ours alone may have the newest."""
    cache = REPO / "build" / "protobuf-check" / protobuf.replace("=", "_")
    if not (cache / "google" / "protobuf").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(cache),
                protobuf,
            ],
            check=True,
        )
    script = (
        "import google.protobuf as pb\n"
        "from superlink_async.wire import exec_pb2, fleet_pb2, serverappio_pb2\n"
        "r = exec_pb2.StartRunResponse(run_id=7)\n"
        "assert exec_pb2.StartRunResponse.FromString(r.SerializeToString()).HasField('run_id')\n"
        "print(pb.__version__)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cache), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    if protobuf.startswith("protobuf=="):
        assert result.stdout.strip() == protobuf.split("==")[1]
