"""What light processes load: the health probe and the signature workers stay small.

The layers themselves are checked by ``lint-imports`` (``make lint``; docs/architecture.md).
That checks import statements; this runs the imports in a fresh interpreter, so that the
packages' ``__init__`` modules, which every import runs, are covered too.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Never loaded by a light process: the state package (both backends), aiosqlite, our wire.
HEAVY = ("superlink_async.state", "aiosqlite", "superlink_async.wire")


def loaded_by(module: str) -> set[str]:
    """Every module name in ``sys.modules`` after importing ``module`` in a new interpreter."""
    script = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "superlink_async",
        "superlink_async.config",
        "superlink_async.probe",
        "superlink_async.runtime.signature_workers",
    ],
)
def test_light_entry_points_load_no_state_backend_and_no_wire_module(module: str) -> None:
    """The probe and the worker start in every container health check and at every start-up."""
    modules = loaded_by(module)
    assert module in modules
    assert not [name for name in modules if name.startswith(HEAVY)]


def test_config_and_the_signature_worker_load_no_protobuf_at_all() -> None:
    """Protobuf is the wire's; the probe needs grpclib's health messages, these need none."""
    for module in ("superlink_async.config", "superlink_async.runtime.signature_workers"):
        assert "google.protobuf" not in loaded_by(module)


def test_the_probe_loads_no_cryptography() -> None:
    """It dials with the standard library's ssl; the key list reader imports it on use."""
    assert not [
        name for name in loaded_by("superlink_async.probe") if name.startswith("cryptography")
    ]
