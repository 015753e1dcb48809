"""End-to-end node authentication with real 1.18.0 SuperNodes and OpenSSH EC keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from superlink_async.tls import CertificateFiles
from tests.e2e.harness import COMPLETED, FederationFactory, FlowerApp, Timeouts

pytestmark = pytest.mark.e2e


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """An OpenSSH ecdsa-sha2-nistp384 key pair, as Flower's e2e generate script makes."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = directory / name
    public = directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public


def key_args(pair: tuple[Path, Path]) -> list[str]:
    return [
        "--auth-supernode-private-key",
        str(pair[0]),
        "--auth-supernode-public-key",
        str(pair[1]),
    ]


@pytest.mark.parametrize("with_tls", [False, True], ids=["plaintext", "tls"])
def test_listed_keys_complete_a_run_and_an_unknown_key_is_refused(
    make_federation: FederationFactory,
    flower_app: FlowerApp,
    tmp_path: Path,
    tls_files: CertificateFiles,
    with_tls: bool,
) -> None:
    """Two SuperNodes whose keys are in the CSV complete a run; a third with an unknown key
    is refused with UNAUTHENTICATED at CreateNode and so never gets a node or a message.
    The same holds with TLS on."""
    pairs = [write_key_pair(tmp_path, f"client_credentials_{i}") for i in range(3)]
    csv_file = tmp_path / "client_public_keys.csv"
    csv_file.write_text(",".join(pair[1].read_text().strip() for pair in pairs[:2]) + "\n")
    federation = make_federation(
        num_supernodes=0,
        superlink_args=["--auth-list-public-keys", str(csv_file)],
        tls=tls_files if with_tls else None,
    )
    superlink = federation.require_superlink()
    superlink.wait_for_output("Node authentication enabled with 2 known public keys", 10)
    for pair in pairs[:2]:
        federation.start_supernode(key_args(pair))
    stranger = federation.start_supernode(key_args(pairs[2]))
    cli = federation.cli(flower_app)
    run_id = cli.run()
    assert cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED
    stranger.wait_for_output("Public key not recognized", Timeouts.OUTPUT_APPEARS)
    assert superlink.output().count("[Fleet.CreateNode] Created node_id=") == 2
