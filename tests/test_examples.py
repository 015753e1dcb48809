"""The examples that need no processes of their own: the compose file is valid and consistent."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from superlink_async.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def assert_cli_accepts(args: list[str]) -> None:
    """Parse ``args`` with our command line without starting anything (unknown options fail)."""
    command = typer.main.get_command(app)
    with command.make_context("superlink-async", list(args)):
        pass


def test_compose_file_wires_supernodes_to_a_persistent_superlink() -> None:
    compose = yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text())
    services = compose["services"]
    superlink = services["superlink"]
    assert "./state:/app/state" in superlink["volumes"]
    assert superlink["command"][-2:] == ["--database", "state.db"]
    assert_cli_accepts(superlink["command"])
    for name in ("supernode-1", "supernode-2"):
        assert services[name]["image"] == "flwr/supernode:1.18.0"
        assert "superlink:9092" in services[name]["command"]
        assert services[name]["depends_on"]["superlink"]["condition"] == "service_healthy"
