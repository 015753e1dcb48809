"""The fences around library internals: each check passes on the installed versions, and
fails in one clear line (library, version, missing name) when a name has moved."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import grpclib.protocol
import grpclib.server
import h2.connection
import h2.settings
import hpack.hpack
import hyperframe.frame
import pytest
from hpack.huffman_table import decode_huffman as hpacks_decoder

import superlink_async._internals as internals
from superlink_async import SuperLink
from superlink_async._internals import IncompatibleLibraryError, check_all
from superlink_async._internals import asyncio as asyncio_internals
from superlink_async._internals import grpclib as grpclib_internals
from superlink_async._internals import h2 as h2_internals
from superlink_async._internals import hpack as hpack_internals
from superlink_async._internals import hyperframe as hyperframe_internals
from superlink_async.config import Config
from superlink_async.transports.grpc import huffman, speedups

FENCES = {
    "asyncio": asyncio_internals,
    "grpclib": grpclib_internals,
    "h2": h2_internals,
    "hpack": hpack_internals,
    "hyperframe": hyperframe_internals,
}


def version_of(library: str) -> str:
    if library == "asyncio":
        return "asyncio (Python "
    return f"{library} {metadata.version(library)} "


def test_every_fence_passes_on_the_installed_versions() -> None:
    for fence in FENCES.values():
        fence.check()
    check_all()


def test_check_all_finds_every_fence_module() -> None:
    """Found by listing the package, so a fence added beside these needs no registration."""
    assert {f"superlink_async._internals.{name}" for name in FENCES} <= set(internals.fences())
    assert not any(name.rpartition(".")[2].startswith("_") for name in internals.fences())


def test_a_fence_added_beside_the_others_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new module's check runs without edits; a plain RuntimeError keeps its message."""
    (tmp_path / "newlib.py").write_text(
        "def check() -> None:\n    raise RuntimeError('newlib 1.0 has no Thing._inner')\n"
    )
    monkeypatch.setattr(internals, "__path__", [*internals.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "superlink_async._internals.newlib", raising=False)
    assert "superlink_async._internals.newlib" in internals.fences()
    with pytest.raises(IncompatibleLibraryError, match=r"^newlib 1\.0 has no Thing\._inner$"):
        check_all()
    monkeypatch.delitem(sys.modules, "superlink_async._internals.newlib")


def lost_in_init(library: str, cls: type, attribute: str) -> tuple[Any, ...]:
    """A case where ``cls``'s instances end up without ``attribute``."""
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        delattr(self, attribute)

    return (library, cls, "__init__", init, f"{cls.__qualname__}.{attribute}")


def not_using(*_: Any, **__: Any) -> None:
    """A stand-in for a library function whose code no longer refers to the name we use."""


class Moved(NamedTuple):
    """A private name gone from a library, and what the check's message must name."""

    library: str
    owner: Any
    attribute: str
    #: What ``owner.attribute`` becomes; None: it is deleted.
    replacement: Any
    named: str


MISSING = [
    Moved(*case)
    for case in [
        ("grpclib", grpclib.server.Server, "_protocol_factory", None, "Server._protocol_factory"),
        ("grpclib", grpclib.server._GC, "__gc_step__", None, "Server.__gc_step__"),
        ("grpclib", grpclib.server.Server, "start", not_using, "_protocol_factory in Server.start"),
        (
            "grpclib",
            grpclib.server.Handler,
            "__init__",
            not_using,
            "Handler.__init__(self, mapping",
        ),
        ("grpclib", grpclib.server.Stream, "__init__", not_using, "_stream in Stream.__init__"),
        ("grpclib", grpclib.protocol.Connection, "__init__", not_using, "_connection in"),
        ("grpclib", grpclib.protocol.Stream, "recv_data", None, "Stream.recv_data"),
        ("grpclib", grpclib.protocol.EventsProcessor, "process", not_using, "processors in"),
        ("grpclib", grpclib.protocol.Buffer, "read", not_using, "AssertionError in Buffer.read"),
        lost_in_init("h2", h2.connection.H2Connection, "_closed_streams"),
        lost_in_init("h2", h2.connection.H2Connection, "_frame_dispatch_table"),
        lost_in_init("h2", h2.settings.Settings, "_settings"),
        ("h2", h2.settings.Settings, "acknowledge", not_using, "_settings in Settings.acknowledge"),
        lost_in_init("asyncio", asyncio.Event, "_waiters"),
        ("hpack", hpack.hpack, "decode_huffman", None, "hpack.hpack.decode_huffman"),
        (
            "hpack",
            hpack.hpack.Decoder,
            "_decode_literal",
            not_using,
            "decode_huffman in Decoder._decode_literal",
        ),
        ("hpack", hpack.huffman_table, "HUFFMAN_TABLE", [(0, 0, 0)], "HUFFMAN_TABLE of 4096"),
        ("hyperframe", hyperframe.frame, "_raw_data_repr", None, "hyperframe.frame._raw_data_repr"),
        ("hyperframe", hyperframe.frame.Frame, "_body_repr", not_using, "_raw_data_repr in"),
    ]
]


@pytest.mark.parametrize("moved", MISSING, ids=[f"{case.library}-{case.named}" for case in MISSING])
def test_a_moved_name_fails_its_check_in_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, moved: Moved
) -> None:
    if moved.replacement is None:
        monkeypatch.delattr(moved.owner, moved.attribute)
    else:
        monkeypatch.setattr(moved.owner, moved.attribute, moved.replacement)
    with pytest.raises(IncompatibleLibraryError) as raised:
        FENCES[moved.library].check()
    message = str(raised.value)
    assert message.startswith(version_of(moved.library))
    assert moved.named in message
    assert "\n" not in message
    with pytest.raises(IncompatibleLibraryError):
        check_all()


def test_a_replacement_that_looks_different_fails_its_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A formatter that now takes two arguments is not the one ``short_data_repr`` replaces."""
    monkeypatch.setattr(hyperframe.frame, "_raw_data_repr", lambda data, width: "")
    with pytest.raises(IncompatibleLibraryError, match=r"_raw_data_repr\(data\) \(it takes data"):
        hyperframe_internals.check()


def test_a_speedup_that_would_change_nothing_fails_and_replaces_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hpack's Decoder no longer looking ``decode_huffman`` up: install fails, patches nothing."""
    monkeypatch.setattr(hpack.hpack, "decode_huffman", hpacks_decoder)
    monkeypatch.setattr(hpack.hpack.Decoder, "_decode_literal", not_using)
    with pytest.raises(
        IncompatibleLibraryError, match=r"decode_huffman in Decoder\._decode_literal"
    ):
        speedups.install()
    assert vars(hpack.hpack)["decode_huffman"] is hpacks_decoder
    assert huffman.decode_huffman is not hpacks_decoder


@pytest.mark.anyio
async def test_the_superlink_refuses_to_start_before_opening_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The check runs first: no database is created, no port is bound."""
    monkeypatch.delattr(h2.connection.H2Connection, "_receive_frame")
    database = tmp_path / "state.db"
    with pytest.raises(IncompatibleLibraryError, match="_receive_frame"):
        async with SuperLink(Config(database=str(database))):
            pass
    assert not database.exists()


def test_the_command_line_fails_with_one_error_line_and_status_1(tmp_path: Path) -> None:
    """What an operator sees after an incompatible upgrade: one ERROR line, no traceback."""
    script = (
        "import sys, grpclib.server\n"
        "del grpclib.server.Server._protocol_factory\n"
        "from superlink_async.cli import main\n"
        "sys.argv = ['superlink-async', '--insecure', '--database', 'state.db']\n"
        "main()\n"
    )
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    assert f"grpclib {metadata.version('grpclib')} has no Server._protocol_factory" in errors[0]
    assert "Traceback" not in output
    assert not (tmp_path / "state.db").exists()
