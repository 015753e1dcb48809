"""End-to-end over TLS: real SuperNodes and `flwr` trusting a test CA, as a user would set it up.

The SuperLink gets the three ``--ssl-*`` files instead of ``--insecure``, the SuperNodes
``--root-certificates ca.crt`` and the CLI ``root-certificates`` in its federation config;
ServerAppIo stays plaintext, so the ``flwr-serverapp`` children work as before.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from superlink_async.tls import CertificateFiles
from tests.e2e.harness import (
    COMPLETED,
    FlowerApp,
    FlowerCli,
    FlowerCliError,
    LocalFederation,
    Timeouts,
)

pytestmark = pytest.mark.e2e

INSECURE_WARNING = "Option `--insecure` was set"


@pytest.fixture(scope="module")
def tls_federation(
    tmp_path_factory: pytest.TempPathFactory,
    superlink_command: list[str],
    tls_files: CertificateFiles,
) -> Iterator[LocalFederation]:
    """A SuperLink serving TLS with the test certificates, and two SuperNodes trusting its CA."""
    workdir = tmp_path_factory.mktemp("tls-federation")
    with LocalFederation(workdir, superlink_command, tls=tls_files) as federation:
        yield federation


def test_a_run_completes_over_tls(tls_federation: LocalFederation, flower_app: FlowerApp) -> None:
    """`flwr run` and two SuperNodes over TLS reach finished:completed; `flwr ls` shows it."""
    cli = tls_federation.cli(flower_app)
    try:
        run_id = cli.run()
        cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES)
    except Exception as exc:
        raise AssertionError(f"{exc}\n{tls_federation.tails()}") from exc
    assert [(run.run_id, run.status) for run in cli.runs()] == [(run_id, COMPLETED)]
    assert INSECURE_WARNING not in tls_federation.require_superlink().output()


def test_a_plaintext_cli_is_refused(tls_federation: LocalFederation, flower_app: FlowerApp) -> None:
    """`flwr ls` with `insecure = true` cannot talk to the TLS Exec API."""
    plaintext = FlowerCli(
        flower_app,
        tls_federation.ports.address(tls_federation.ports.exec),
        tls_federation.workdir / "plaintext-cli-home",
    )
    with pytest.raises(FlowerCliError) as refused:
        plaintext.runs()
    assert "UNAVAILABLE" in refused.value.stdout
