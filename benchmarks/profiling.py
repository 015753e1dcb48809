"""Sample a SuperLink with py-spy while a scenario runs, and summarise where its CPU went.

py-spy reads the interpreter's memory from outside (``--nonblocking``: the target is not
paused), so the server runs unmodified. The raw output is one collapsed stack per line,
``frame;frame;... count``; the summary ranks functions by the samples in which they are the
innermost frame (self) and in which they appear at all (total).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_LINE_NUMBER = re.compile(r":\d+\)$")
_SAMPLES_PER_SECOND = 100


def find_py_spy() -> str | None:
    """The py-spy executable beside this interpreter or on PATH, if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def py_spy() -> str:
    """``find_py_spy``, or an error saying how to install it (``pip install py-spy``)."""
    found = find_py_spy()
    if found is None:
        raise RuntimeError("--profile needs py-spy: pip install 'superlink-async[bench]'")
    return found


class Sampler:
    """py-spy attached to ``pid`` for the lifetime of the context; raw stacks to ``output``.

    ``gil_only`` keeps only samples of the thread holding the GIL: the Python work that
    competes for the event loop, without threads that wait (SQLite's, anyio's).
    """

    def __init__(
        self, pid: int, output: Path, rate: int = _SAMPLES_PER_SECOND, gil_only: bool = False
    ) -> None:
        self._argv = [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
            *(["--gil"] if gil_only else []),
        ]
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sampler:
        self._process = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@dataclass(frozen=True)
class ProfileSummary:
    """Sample counts per function (``name (file)``, line numbers dropped) and per stack."""

    samples: int
    own: Counter[str]
    total: Counter[str]
    stacks: Counter[tuple[str, ...]]

    @classmethod
    def read(cls, paths: list[Path]) -> ProfileSummary:
        """Merge py-spy raw outputs."""
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        stacks: Counter[tuple[str, ...]] = Counter()
        samples = 0
        for path in paths:
            for line in path.read_text().splitlines():
                stack, _, count_text = line.rpartition(" ")
                if not stack or not count_text.isdigit():
                    continue
                count = int(count_text)
                # The first frame is the thread's name; frames run outermost first.
                frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")[1:]]
                if not frames:
                    continue
                samples += count
                stacks[tuple(frames)] += count
                own[frames[-1]] += count
                for frame in set(frames):
                    total[frame] += count
        return cls(samples, own, total, stacks)

    def rows(self, top: int) -> list[ProfileRow]:
        """The ``top`` functions by own samples, with their totals, in percent."""
        return [
            ProfileRow(function, 100 * count / self.samples, self.share(function))
            for function, count in self.own.most_common(top)
        ]

    def share(self, function: str) -> float:
        """Percent of samples in which ``function`` is on the stack."""
        return 100 * self.total[function] / self.samples if self.samples else 0.0

    def share_in(self, fragments: tuple[str, ...]) -> float:
        """Percent of samples with a frame whose file path contains one of ``fragments``."""
        inside = sum(
            count
            for stack, count in self.stacks.items()
            if any(fragment in frame for frame in stack for fragment in fragments)
        )
        return 100 * inside / self.samples if self.samples else 0.0

    def table(self, top: int) -> str:
        """A Markdown table of the ``top`` functions by own samples, with their totals."""
        return profile_table(self.rows(top))


@dataclass(frozen=True)
class ProfileRow:
    """One function of a profile: percent of samples it ran itself, and was on the stack."""

    function: str
    own_pct: float
    total_pct: float


def profile_table(rows: list[ProfileRow]) -> str:
    """Markdown: own %, total %, function."""
    lines = ["| own % | total % | function |", "|---:|---:|---|"]
    lines += [f"| {r.own_pct:.1f} | {r.total_pct:.1f} | `{r.function}` |" for r in rows]
    return "\n".join(lines)
