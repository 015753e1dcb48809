"""Fixtures for the end-to-end tests: the SuperLink under test, the shared app, federations."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import pytest

from superlink_async.testing import venv_bin
from superlink_async.tls import CertificateFiles
from tests.e2e.harness import (
    APP_ROUNDS,
    FederationFactory,
    FlowerApp,
    LocalFederation,
    is_reference,
    resolve_superlink_command,
)

_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reference_fails(reason): flwr 1.18.0's flower-superlink is known to fail this test; "
        "it is an expected failure when the suite targets the reference",
    )


def _superlink_command(config: pytest.Config) -> list[str]:
    option: str | None = config.getoption("--superlink-cmd", default=None)
    return resolve_superlink_command(option)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not is_reference(_superlink_command(config)):
        return
    for item in items:
        marker = item.get_closest_marker("reference_fails")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.xfail(reason=f"reference: {reason}", strict=False))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = request.node.stash.get(_CALL_REPORT, None)
    return report is None or report.failed


@pytest.fixture(scope="session")
def superlink_command(pytestconfig: pytest.Config) -> list[str]:
    """The SuperLink command line under test, without flags."""
    command = _superlink_command(pytestconfig)
    for program in ("flower-supernode", "flwr", "flwr-serverapp"):
        if not (venv_bin() / program).exists() and shutil.which(program) is None:
            pytest.skip(f"{program} (flwr 1.18.0) is not installed")
    click = tuple(int(part) for part in version("click").split(".")[:2])
    if click >= (8, 2):
        pytest.fail(f"flwr 1.18.0's CLI needs click<8.2 (typer 0.12), found {version('click')}")
    return command


@pytest.fixture(scope="session")
def targets_reference(superlink_command: list[str]) -> bool:
    """Whether the suite runs against Flower's own flower-superlink."""
    return is_reference(superlink_command)


@pytest.fixture(scope="session")
def flower_app(tmp_path_factory: pytest.TempPathFactory) -> FlowerApp:
    """The `flwr new` NumPy app (2 rounds, an ``e2e`` federation), created once per session."""
    return FlowerApp.create(tmp_path_factory.mktemp("app"), "e2eapp", rounds=APP_ROUNDS)


@pytest.fixture
def make_federation(
    request: pytest.FixtureRequest, tmp_path: Path, superlink_command: list[str]
) -> Iterator[FederationFactory]:
    """Start federations on demand; afterwards every process is gone (logs shown on failure)."""
    created: list[LocalFederation] = []

    def make(
        *,
        num_supernodes: int = 2,
        superlink_args: Sequence[str] = (),
        fleet_api_types: Sequence[str] = ("grpc-rere",),
        tls: CertificateFiles | None = None,
    ) -> LocalFederation:
        federation = LocalFederation(
            tmp_path / f"federation-{len(created)}",
            superlink_command,
            num_supernodes=num_supernodes,
            superlink_args=superlink_args,
            fleet_api_types=fleet_api_types,
            tls=tls,
        )
        created.append(federation)
        federation.start()
        return federation

    try:
        yield make
    finally:
        failed = _failed(request)
        for federation in created:
            if failed:
                print(federation.tails())
            federation.close()
