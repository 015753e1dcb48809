"""Free loopback ports for tests that bind real sockets, and a SuperLink config on them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from superlink_async.config import ISOLATION_PROCESS, Config
from superlink_async.testing import free_port

__all__ = ["free_port", "loopback", "loopback_config"]


def loopback(port: int | None = None) -> str:
    """``127.0.0.1:<port>``, with a free port unless one is given."""
    return f"127.0.0.1:{free_port() if port is None else port}"


def loopback_config(tmp_path: Path, **changes: Any) -> Config:
    """An in-process SuperLink config: plaintext, free loopback ports, no ServerApp children.

    ``changes`` override any field.
    """
    config = Config(
        insecure=True,
        isolation=ISOLATION_PROCESS,
        storage_dir=tmp_path / "ffs",
        exec_api_address=loopback(),
        serverappio_api_address=loopback(),
        fleet_api_address=loopback(),
    )
    return replace(config, **changes)
