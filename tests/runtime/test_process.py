"""Process-wide choices of the command line: GC tuning, HPACK decoder and event loop."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from superlink_async.config import ConfigError
from superlink_async.runtime import process
from superlink_async.runtime.process import GC_OLD_THRESHOLD, GC_YOUNG_THRESHOLD, run_server
from superlink_async.transports.grpc import speedups


def printed_by(script: str) -> list[str]:
    """What ``script`` prints in a fresh interpreter (process-wide tuning must not leak)."""
    return subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.split()


def test_tune_gc_freezes_what_exists_and_collects_less_often() -> None:
    script = (
        "import gc\n"
        "from superlink_async.runtime.process import tune_gc\n"
        "tune_gc()\n"
        "print(gc.get_freeze_count() > 10000, *gc.get_threshold())\n"
    )
    expected = ["True", str(GC_YOUNG_THRESHOLD), "10", str(GC_OLD_THRESHOLD)]
    assert printed_by(script) == expected


def test_run_server_installs_the_http2_speedups_before_freezing() -> None:
    """hpack and hyperframe use ours, and the decoder's tables are frozen with the rest."""
    script = (
        "import gc, hpack.hpack, hyperframe.frame\n"
        "from superlink_async.runtime.process import run_server\n"
        "from superlink_async.transports.grpc import huffman, speedups\n"
        "async def main() -> None:\n"
        "    pass\n"
        "run_server(main, 'asyncio')\n"
        "print(hpack.hpack.decode_huffman is huffman.decode_huffman,\n"
        "      hyperframe.frame._raw_data_repr is speedups.short_data_repr,\n"
        "      all(table is not huffman._steps().emitted for table in gc.get_objects()))\n"
    )
    assert printed_by(script) == ["True", "True", "True"]


@pytest.fixture
def untuned_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``run_server`` without touching this process's collector or hpack."""
    monkeypatch.setattr(process, "tune_gc", lambda: None)
    monkeypatch.setattr(speedups, "install", lambda: None)
    yield
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("untuned_gc")
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_run_server_runs_main_on_the_chosen_loop(event_loop: str) -> None:
    pytest.importorskip("uvloop")
    loops: list[str] = []

    async def main() -> None:
        loops.append(type(asyncio.get_running_loop()).__module__)

    run_server(main, event_loop)
    assert loops[0].startswith("uvloop" if event_loop == "uvloop" else "asyncio")


@pytest.mark.usefixtures("untuned_gc")
def test_a_requested_uvloop_that_is_missing_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError

    async def main() -> None:
        raise AssertionError("must not run")

    with pytest.raises(ConfigError, match=r"pip install 'superlink-async\[uvloop\]'"):
        run_server(main, "uvloop")
