"""Every command the docs tell an operator to run with our server is one our CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.test_examples import assert_cli_accepts

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)
IMAGE = "superlink-async"


def server_commands(text: str) -> list[list[str]]:
    """Arguments of each `python -m superlink_async` / `docker run ... <image>` line."""
    commands = []
    for block in BASH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == ["python", "-m", "superlink_async"]:
                commands.append(words[3:])
            elif words[:2] == ["docker", "run"] and IMAGE in words:
                commands.append(words[words.index(IMAGE) + 1 :])
    return commands


@pytest.mark.parametrize("page", DOCS, ids=lambda path: path.name)
def test_documented_server_commands_parse(page: Path) -> None:
    for args in server_commands(page.read_text()):
        assert_cli_accepts(args)


def test_the_docs_show_server_commands_at_all() -> None:
    assert sum(len(server_commands(page.read_text())) for page in DOCS) >= 5


def test_every_page_is_in_the_index() -> None:
    index = (ROOT / "docs" / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, page.name
