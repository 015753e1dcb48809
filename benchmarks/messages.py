"""The payloads of a round: a FAB, instructions with a model, replies with an update.

Both sides carry one ``Array`` of the requested size, the way a model's weights travel in
an ``ArrayRecord``; the instruction also tells the node how large its reply must be, in a
``ConfigRecord``, so one simulated fleet serves rounds of any reply size.
"""

from __future__ import annotations

import functools
import io
import time
import zipfile

from superlink_async.wire import message_pb2, recorddict_pb2

SUPERLINK_NODE_ID = 1
#: A SuperNode and ``flwr-serverapp`` give every message 12 hours to live.
DEFAULT_TTL = 43200.0
REPLY_BYTES_KEY = "reply-bytes"

_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "benchapp"
version = "1.0.0"
dependencies = ["flwr>=1.18.0"]

[tool.flwr.app]
publisher = "bench"

[tool.flwr.app.components]
serverapp = "benchapp.server_app:app"
clientapp = "benchapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 1
"""


def make_fab() -> bytes:
    """A valid FAB: a zip whose ``pyproject.toml`` the SuperLink parses on StartRun."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pyproject.toml", _PYPROJECT)
        archive.writestr("benchapp/__init__.py", "")
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def _arrays(size: int) -> recorddict_pb2.ArrayRecord:
    """One zero-filled ``uint8`` array of ``size`` bytes, built once per size."""
    array = recorddict_pb2.Array(
        dtype="uint8", shape=[size], stype="numpy.ndarray", data=bytes(size)
    )
    return recorddict_pb2.ArrayRecord(data_keys=["weights"], data_values=[array])


def instruction(
    run_id: int, node_id: int, group_id: str, payload_bytes: int, reply_bytes: int
) -> message_pb2.Message:
    """A ``train`` instruction from the SuperLink to ``node_id`` carrying the model."""
    config = recorddict_pb2.ConfigRecord(
        data={REPLY_BYTES_KEY: recorddict_pb2.ConfigRecordValue(sint64=reply_bytes)}
    )
    content = recorddict_pb2.RecordDict(
        arrays={"model": _arrays(payload_bytes)}, configs={"config": config}
    )
    metadata = message_pb2.Metadata(
        run_id=run_id,
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=node_id,
        group_id=group_id,
        ttl=DEFAULT_TTL,
        message_type="train",
        created_at=time.time(),
    )
    return message_pb2.Message(metadata=metadata, content=content)


def reply(node_id: int, ins: message_pb2.Message) -> message_pb2.Message:
    """The node's answer to ``ins``, sized as the instruction asks, TTL as a SuperNode sets it."""
    size = ins.content.configs["config"].data[REPLY_BYTES_KEY].sint64
    created_at = time.time()
    metadata = message_pb2.Metadata(
        run_id=ins.metadata.run_id,
        src_node_id=node_id,
        dst_node_id=SUPERLINK_NODE_ID,
        reply_to_message_id=ins.metadata.message_id,
        group_id=ins.metadata.group_id,
        ttl=ins.metadata.ttl - (created_at - ins.metadata.created_at),
        message_type=ins.metadata.message_type,
        created_at=created_at,
    )
    content = recorddict_pb2.RecordDict(arrays={"update": _arrays(size)})
    return message_pb2.Message(metadata=metadata, content=content)
