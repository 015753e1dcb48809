"""The commands the docs tell an operator to run are ones the named programs accept.

Every ```bash block of README.md and docs/*.md is split into commands (continuation lines
joined, comments dropped, ``&&`` chains split). Commands of programs we can parse without
running them are parsed: our server (directly or as the image's arguments after
``docker run ... superlink-async``), the health probe, ``flower-supernode`` and ``flwr``,
all with their own parsers, so an unknown option or a bad choice fails here. The backup
commands of persistence.md are run for real against a database a server has open. Commands
that need a Docker engine, the network or root (docker, pip, sudo, openssl) are not run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import anyio
import click
import pytest
import typer
from flwr.cli.app import app as flwr_app
from flwr.client.supernode.app import _parse_args_run_supernode

from superlink_async.exit_codes import ExitCode
from superlink_async.probe import argument_parser as probe_parser
from superlink_async.state.factory import fab_store_for, open_state
from superlink_async.testing.postgres import PASSWORD, SUPERUSER, PostgresServer
from superlink_async.wire.recorddict_pb2 import ConfigRecord
from tests.fabs import make_fab
from tests.test_examples import assert_cli_accepts

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
IMAGE = "superlink-async"


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the ```<language> blocks of a Markdown page."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def commands(text: str) -> list[list[str]]:
    """Each shell command of the page's ```bash blocks, as words."""
    found: list[list[str]] = []
    for block in fenced_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while "&&" in words:
                found.append(words[: words.index("&&")])
                words = words[words.index("&&") + 1 :]
            if words:
                found.append(words)
    return found


def parse_argparse(
    program: str, make_parser: Callable[[], argparse.ArgumentParser], args: list[str]
) -> None:
    """Parse with the program's own argparse parser, which exits on a bad option."""
    try:
        make_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{program} rejects {args}")


parse_supernode = partial(parse_argparse, "flower-supernode", _parse_args_run_supernode)
parse_probe = partial(parse_argparse, "python -m superlink_async.probe", probe_parser)


def parse_flwr(args: list[str]) -> None:
    """flwr 1.18.0's CLI: resolve the subcommand and parse its options (no command runs)."""
    group = typer.main.get_command(flwr_app)
    with group.make_context("flwr", list(args)) as context:
        assert isinstance(group, typer.core.TyperGroup)
        name, command, rest = group.resolve_command(context, context.protected_args + context.args)
        assert command is not None, f"flwr has no command {name}"
        with command.make_context(str(name), rest, parent=context):
            pass


Check = tuple[Callable[[list[str]], None], list[str]]


def checks(words: list[str]) -> list[Check]:
    """The parser and arguments for each part of a command we can check (none: not ours)."""
    if words[:3] == ["python", "-m", "superlink_async"]:
        return [(assert_cli_accepts, words[3:])]
    if words[:3] == ["python", "-m", "superlink_async.probe"]:
        return [(parse_probe, words[3:])]
    if words[:2] == ["docker", "run"] and IMAGE in words:
        options, args = words[: words.index(IMAGE)], words[words.index(IMAGE) + 1 :]
        health = options[options.index("--health-cmd") + 1] if "--health-cmd" in options else ""
        return [(assert_cli_accepts, args), *checks(shlex.split(health))]
    if words[:1] == ["flower-supernode"]:
        return [(parse_supernode, words[1:])]
    if words[:1] == ["flwr"]:
        return [(parse_flwr, words[1:])]
    return []


def checked_commands(page: Path) -> list[Check]:
    return [check for words in commands(page.read_text()) for check in checks(words)]


@pytest.mark.parametrize("page", DOCS, ids=lambda path: path.name)
def test_documented_commands_parse(page: Path) -> None:
    for parse, args in checked_commands(page):
        parse(args)


def test_the_checks_see_every_kind_of_command() -> None:
    parsers = [parse for page in DOCS for parse, _ in checked_commands(page)]
    assert parsers.count(assert_cli_accepts) >= 5
    assert {parse_supernode, parse_flwr, parse_probe} <= set(parsers)


def test_a_bad_option_is_caught() -> None:
    """The checks are not vacuous: each parser rejects an option its program lacks."""
    for line in (
        "python -m superlink_async --no-such-option",
        "python -m superlink_async.probe --no-such-option",
        "flower-supernode --no-such-option",
        "flwr new my-app --no-such-option",
    ):
        ((parse, args),) = checks(shlex.split(line))
        with pytest.raises((click.UsageError, pytest.fail.Exception)):
            parse(args)


def run_backup_recipe(recipe: str) -> None:
    """Run one of persistence.md's backup recipes, exactly as written, in this directory."""
    page = (ROOT / "docs" / "persistence.md").read_text()
    if recipe == "sqlite3":
        subprocess.run(next(cmd for cmd in commands(page) if cmd[0] == "sqlite3"), check=True)
    else:
        (code,) = [code for code in fenced_blocks(page, "python") if ".backup(" in code]
        exec(code, {})


@pytest.mark.parametrize("recipe", ["sqlite3", "python"])
@pytest.mark.anyio
async def test_persistence_backup_copies_a_live_database(
    recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe, while a server holds the file open with the latest commit still in the WAL."""
    if recipe == "sqlite3" and shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command-line shell is not installed")
    monkeypatch.chdir(tmp_path)
    async with open_state("state.db") as state:
        run_id = await state.create_run("flwr/app", "1.0", "0" * 64, {}, ConfigRecord())
        assert (await anyio.Path("state.db-wal").stat()).st_size > 0
        await anyio.to_thread.run_sync(run_backup_recipe, recipe)
    async with open_state("backup.db") as backup:
        assert [run.run_id for run in await backup.get_runs()] == [run_id]


def test_every_exit_code_has_a_section() -> None:
    headings = [
        line
        for line in (ROOT / "docs" / "exit-codes.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    for code in ExitCode:
        assert any(f"{int(code)} {code.name}" in line for line in headings), code.name


def test_every_page_is_in_the_index() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, page.name


#: The database postgresql.md's backup recipes dump and the one they restore into.
DOCUMENTED_DATABASES = ("flwr", "flwr_restored")


def postgresql_recipe(program: str) -> list[str]:
    """The one ``program`` command of postgresql.md, as words."""
    page = (ROOT / "docs" / "postgresql.md").read_text()
    (command,) = [words for words in commands(page) if words[0] == program]
    return command


@pytest.fixture
def documented_databases(postgres_server: PostgresServer) -> Iterator[str]:
    """The recipes' source database, created empty (its copy is left to the recipe); its URL."""
    source = DOCUMENTED_DATABASES[0]
    postgres_server.psql(f"CREATE DATABASE {source}")
    try:
        yield postgres_server.url(source)
    finally:
        for name in DOCUMENTED_DATABASES:
            postgres_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.anyio
async def test_postgresql_backup_and_restore_keep_runs_and_fabs(
    postgres_server: PostgresServer, documented_databases: str, tmp_path: Path
) -> None:
    """postgresql.md's pg_dump, createdb and pg_restore, run as written (libpq's variables
    naming the tests' server) while a server has the database open: the restored database
    serves the same runs and FABs."""
    source = documented_databases
    environ = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres_server.port),
        "PGUSER": SUPERUSER,
        "PGPASSWORD": PASSWORD,
        "PATH": f"{postgres_server.bindir}{os.pathsep}{os.environ['PATH']}",
    }
    async with open_state(source) as state:
        run_id = await state.create_run("flwr/app", "1.0", "0" * 64, {}, ConfigRecord())
        fab = make_fab()
        fab_hash = await fab_store_for(source, state, tmp_path).put(fab)
        for program in ("pg_dump", "createdb", "pg_restore"):
            await anyio.run_process(postgresql_recipe(program), cwd=tmp_path, env=environ)
    copy = postgres_server.url(DOCUMENTED_DATABASES[1])
    async with open_state(copy) as restored:
        assert [run.run_id for run in await restored.get_runs()] == [run_id]
        assert await fab_store_for(copy, restored, tmp_path).get(fab_hash) == fab


def test_the_haproxy_excerpts_are_lines_of_the_example_config() -> None:
    """Each ```haproxy block of high-availability.md is lines of examples/haproxy.cfg (the
    configuration the tests render and run), in the file's order."""
    config = (ROOT / "examples" / "haproxy.cfg").read_text().splitlines()
    blocks = fenced_blocks((ROOT / "docs" / "high-availability.md").read_text(), "haproxy")
    assert blocks
    for block in blocks:
        position = 0
        for line in filter(None, block.splitlines()):
            assert line in config[position:], line
            position = config.index(line, position) + 1
