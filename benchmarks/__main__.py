"""``python -m benchmarks``: measure SuperLink commands side by side and write the report.

By default it compares ``python -m superlink_async`` with flwr 1.18.0's
``flower-superlink``, both from this interpreter's environment; ``--target`` names any
other command that accepts the ``flower-superlink`` flags. The ``postgres`` backend and the
replica scenario run on a PostgreSQL server the tool starts itself (``initdb`` into a temp
dir, loopback only; see ``superlink_async.testing.postgres``) and removes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.config import PRESETS, Settings
from benchmarks.loadgen import Fleet
from benchmarks.profiling import ProfileSummary
from benchmarks.report import Report, Results, machine, versions
from benchmarks.scenarios import Bench, say
from benchmarks.superlink import Target, raise_open_files_limit
from superlink_async.testing.postgres import (
    PostgresServer,
    PostgresUnavailableError,
    running_postgres_server,
)

#: Descriptors a SuperLink needs besides its Fleet connections (listeners, logs, SQLite).
_SERVER_RESERVE = 500
_PROFILE_TOP = 25


def default_targets(preset: str) -> list[Target]:
    """Ours, then the reference when flwr 1.18.0 is installed (not for the smoke preset)."""
    targets = [Target("superlink-async", (sys.executable, "-m", "superlink_async"))]
    beside = Path(sys.executable).with_name("flower-superlink")
    reference = str(beside) if beside.exists() else shutil.which("flower-superlink")
    if reference is not None and preset != "smoke":
        targets.append(_with_command("flower-superlink", (reference,)))
    return targets


def _with_command(label: str, command: tuple[str, ...]) -> Target:
    """A target; flwr's ``flower-superlink`` (SQLite only, up to 1.18.0) gets no PostgreSQL."""
    return Target(label, command, postgres=Path(command[0]).name != "flower-superlink")


def _target(text: str) -> Target:
    label, sep, command = text.partition("=")
    if not sep or not label or not command.strip():
        raise argparse.ArgumentTypeError(f"expected LABEL=COMMAND, got {text!r}")
    return _with_command(label, tuple(shlex.split(command)))


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1000,5000, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("fleet sizes must be positive")
    return sizes


def _choices(*allowed: str) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated values out of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(part.strip() for part in text.split(","))
        unknown = [value for value in values if value not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}, got {text!r}")
        return values

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument(
        "--target",
        type=_target,
        action="append",
        metavar="LABEL=COMMAND",
        help="a SuperLink command to measure (repeatable; default: ours, then the reference "
        "except with --preset smoke)",
    )
    parser.add_argument("--baseline", help="label the ratios divide by (default: the last target)")
    parser.add_argument("--runs", type=int, help="runs per backend and target")
    parser.add_argument("--fleet-sizes", type=_sizes, help="idle-fleet sizes, e.g. 1000,5000")
    parser.add_argument("--workers", type=int, help="load-generator processes")
    parser.add_argument(
        "--backends",
        type=_choices("memory", "sqlite", "postgres"),
        help="e.g. memory or memory,sqlite,postgres",
    )
    parser.add_argument(
        "--scenarios",
        type=_choices("idle", "round", "edge", "replicas"),
        help="idle (A), round (B), edge (C) and/or replicas (D), e.g. edge or idle,round",
    )
    parser.add_argument("--edge-runs", type=int, help="runs of scenario C (at most --runs)")
    parser.add_argument("--replica-runs", type=int, help="runs of scenario D (at most --runs)")
    parser.add_argument(
        "--edge-nodes", type=int, help="scenario C at this size for every target (no search)"
    )
    parser.add_argument("--output", type=Path, default=Path("build/benchmarks.md"))
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: render the raw results of an earlier run into --output",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 when a session broke off or was skipped (the smoke test)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the first target with py-spy into DIR (skews its numbers: not for reports)",
    )
    args = parser.parse_args(argv)
    args.target = args.target or default_targets(args.preset)
    labels = [target.label for target in args.target]
    if len(set(labels)) != len(labels):
        parser.error("target labels must differ")
    args.baseline = args.baseline or labels[-1]
    if args.baseline not in labels:
        parser.error(f"--baseline {args.baseline!r} is not a target label")
    return args


def settings_of(args: argparse.Namespace) -> Settings:
    """The preset with the command line's overrides."""
    settings = PRESETS[args.preset]
    overrides = {
        "runs": args.runs,
        "fleet_sizes": args.fleet_sizes,
        "workers": args.workers,
        "backends": args.backends,
        "scenarios": args.scenarios,
        "edge_runs": args.edge_runs,
        "edge_nodes": args.edge_nodes,
        "replica_runs": args.replica_runs,
    }
    return dataclasses.replace(
        settings, **{key: value for key, value in overrides.items() if value is not None}
    )


async def measure(
    settings: Settings, targets: list[Target], profile: Path | None
) -> tuple[Bench, tuple[float, float, float]]:
    """Run every scenario; returns the bench and the load average before it started."""
    largest = max(
        [
            *settings.fleet_sizes,
            *(spec.nodes for spec in settings.rounds),
            *(round(factor * settings.edge_max) for factor in settings.edge_factors),
        ]
    )
    limit = raise_open_files_limit(largest + 2 * _SERVER_RESERVE)
    with _postgres_if_needed(settings) as postgres:
        load_before = os.getloadavg()
        async with Fleet(settings.workers, limit - _SERVER_RESERVE) as fleet:
            bench = Bench(settings, targets, fleet, profile, postgres)
            await bench.run_all()
    return bench, load_before


@contextmanager
def _postgres_if_needed(settings: Settings) -> Iterator[PostgresServer | None]:
    """A durable PostgreSQL server (fsync on) when a backend or scenario needs one."""
    if "postgres" not in settings.backends and "replicas" not in settings.scenarios:
        yield None
        return
    say("starting a PostgreSQL server ...")
    with running_postgres_server(durable=True) as server:
        yield server


def write_profile_summary(directory: Path) -> Path:
    """One table per scenario and backend, merged over runs, beside the raw stacks."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(directory.glob("*-run*.txt")):
        groups.setdefault(path.stem.rsplit("-run", 1)[0], []).append(path)
    sections = ["# py-spy profile of the first target", ""]
    for name, paths in groups.items():
        summary = ProfileSummary.read(paths)
        sections += [f"## {name} ({summary.samples} samples)", "", summary.table(_PROFILE_TOP), ""]
    output = directory / "summary.md"
    output.write_text("\n".join(sections))
    return output


def write_report(results: Results, output: Path) -> None:
    """The Markdown report of ``results`` at ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(Report(results).render())
    say(f"report written to {output}")


def main(argv: list[str] | None = None) -> int:
    """Measure, then write the Markdown report (and the raw JSON when asked)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.render is not None:
        write_report(Results.from_json(args.render.read_text()), args.output)
        return 0
    settings = settings_of(args)
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    # Before measuring: the servers run from the work tree as it is when the run starts.
    machine_before, versions_before = machine(), versions()
    try:
        bench, load_before = asyncio.run(measure(settings, args.target, args.profile))
    except PostgresUnavailableError as error:
        print(f"python -m benchmarks: {error}", file=sys.stderr)
        return 2
    results = Results(
        command=shlex.join(["python", "-m", "benchmarks", *argv]),
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.monotonic() - clock,
        machine=machine_before,
        versions=versions_before,
        settings=settings,
        targets=args.target,
        baseline=args.baseline,
        load_before=load_before,
        load_after=os.getloadavg(),
        idle=bench.idle,
        rounds=bench.rounds,
        edge=bench.edge,
        broken=bench.broken,
        profiles=bench.profiles,
        replica_idle=bench.replica_idle,
        replica_rounds=bench.replica_rounds,
    )
    write_report(results, args.output)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(results.to_json())
    if args.profile is not None:
        say(f"profile summary written to {write_profile_summary(args.profile)}")
    return 1 if args.strict and bench.broken else 0


if __name__ == "__main__":
    sys.exit(main())
