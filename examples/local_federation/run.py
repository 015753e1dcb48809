"""A complete local federation on 127.0.0.1, start to finish (``make demo``).

1. ``flwr new`` creates a NumPy Flower App (offline, from flwr 1.18.0's templates);
2. our SuperLink (``python -m superlink_async --insecure``) starts on free ports, with two real
   flwr 1.18.0 SuperNodes connected to its Fleet API;
3. ``flwr run`` submits the app over the Exec API; the SuperLink launches ``flwr-serverapp``;
4. ``flwr log`` streams the ServerApp's log until the run finishes, ``flwr ls`` shows the result;
5. everything is stopped with SIGTERM (and killed if it lingers).

The process handling is :mod:`superlink_async.testing`, shared with the end-to-end tests.
Options: ``--superlink-cmd flower-superlink`` runs the same demo against the reference,
``--rounds N``, ``--supernodes N``, ``--workdir DIR`` keeps the logs and the app.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from superlink_async.testing import (
    FlowerApp,
    FlowerCli,
    FlowerCliError,
    LocalFederation,
    WaitTimeout,
    our_superlink_command,
    resolve_command,
)

COMPLETED = "finished:completed"
FINAL_STATUSES = (COMPLETED, "finished:failed", "finished:stopped")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The demo's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--superlink-cmd",
        default=None,
        help="SuperLink command (default: python -m superlink_async)",
    )
    parser.add_argument("--supernodes", type=int, default=2, help="number of SuperNodes")
    parser.add_argument("--rounds", type=int, default=3, help="num-server-rounds of the app")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds the run may take")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the app and logs here (default: temp)"
    )
    return parser.parse_args(argv)


def say(text: str) -> None:
    """A demo narration line, set apart from the processes' own output."""
    print(f"\n==> {text}", flush=True)


def follow_run(cli: FlowerCli, run_id: int, timeout: float) -> str:
    """Stream ``flwr log`` until the run ends, then return its final ``flwr ls`` status."""
    deadline = time.monotonic() + timeout
    stream = subprocess.Popen(cli.log_stream_argv(run_id), env=cli.env, stdin=subprocess.DEVNULL)
    try:
        stream.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        say(f"the run did not finish within {timeout:.0f}s")
    finally:
        if stream.poll() is None:
            stream.terminate()
            stream.wait(timeout=10)
    remaining = max(deadline - time.monotonic(), 5.0)
    return cli.wait_for_status(run_id, FINAL_STATUSES, remaining)


def demo(args: argparse.Namespace, workdir: Path) -> int:
    """Run the whole demo in ``workdir``; return the exit status."""
    command = resolve_command(args.superlink_cmd) if args.superlink_cmd else our_superlink_command()
    say("Creating a NumPy Flower App with `flwr new`")
    app = FlowerApp.create(workdir, "demoapp", rounds=args.rounds)
    print(f"    {app.path} (num-server-rounds = {args.rounds})")

    say(f"Starting the SuperLink and {args.supernodes} SuperNodes on 127.0.0.1")
    with LocalFederation(
        workdir / "federation", command, num_supernodes=args.supernodes
    ) as federation:
        ports = federation.ports
        print(f"    SuperLink: {' '.join(federation.superlink_argv)}")
        print(f"    Exec {ports.exec}, Fleet {ports.fleet}, ServerAppIo {ports.serverappio}")
        print(f"    logs in {federation.workdir}")
        cli = federation.cli(app)

        say("Submitting the app with `flwr run`")
        run_id = cli.run()
        print(f"    run {run_id}")

        say(f"Streaming `flwr log {run_id}` until the run finishes")
        status = follow_run(cli, run_id, args.timeout)

        say("`flwr ls`")
        print(cli.runs_table(), flush=True)

        say("Stopping the SuperNodes and the SuperLink (SIGTERM)")
    for process in federation.processes():
        print(f"    {process.name}: exit status {process.returncode}")

    say(f"Run {run_id}: {status}")
    return 0 if status == COMPLETED else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run the demo in a temporary (or the given) directory."""
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="superlink-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    status = 1
    try:
        status = demo(args, workdir)
    except (FlowerCliError, WaitTimeout, RuntimeError) as exc:
        say(f"demo failed: {exc}")
    except KeyboardInterrupt:
        say("interrupted; every process was stopped")
        status = 130
    if status != 0 or args.workdir is not None:
        print(f"    app and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
