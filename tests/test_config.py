"""Config: addresses and defaults as flower-superlink 1.18.0 decides them, and its one check.

``Config.check`` is the validation of the CLI and of embedding alike; tests/test_cli.py pins
how the CLI reports each error, these pin the errors themselves.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from superlink_async.config import (
    MAX_MESSAGE_BYTES,
    SIMULATION_EXECUTOR,
    Address,
    AddressError,
    Config,
    ConfigError,
    KeyListError,
    executor_settings,
    load_known_public_keys,
)
from superlink_async.exit_codes import ExitCode
from superlink_async.tls import CertificateFiles, TlsError
from tests.node_keys import NodeKey


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("0.0.0.0:9091", "0.0.0.0", 9091, "0.0.0.0:9091"),
        ("[::]:9092", "::", 9092, "[::]:9092"),
        ("localhost:1", "localhost", 1, "localhost:1"),
        (":9093", "", 9093, ":9093"),
    ],
)
def test_addresses_split_at_the_last_colon(text: str, host: str, port: int, shown: str) -> None:
    address = Address.parse(text)
    assert (address.host, address.port, str(address)) == (host, port, shown)


@pytest.mark.parametrize("text", ["no-port", "host:0", "host:65536", "host:http", "[::1]:"])
def test_unparsable_addresses_name_the_input(text: str) -> None:
    with pytest.raises(AddressError, match=rf"Address \({re.escape(text)}\)"):
        Address.parse(text)


@pytest.mark.parametrize(
    ("text", "dialled"),
    [("0.0.0.0:9091", "127.0.0.1:9091"), (":9091", "127.0.0.1:9091"), ("[::]:9091", "[::]:9091")],
)
def test_children_dial_loopback_for_all_interface_binds(text: str, dialled: str) -> None:
    assert str(Address.parse(text).dialable()) == dialled


def test_fleet_address_defaults_follow_the_api_type() -> None:
    assert Config().fleet_address == "0.0.0.0:9092"
    assert Config(fleet_api_type="rest").fleet_address == "0.0.0.0:9095"
    assert Config(fleet_api_address="127.0.0.1:1").fleet_address == "127.0.0.1:1"


def test_executor_settings_parse_key_value_pairs_and_toml_files(tmp_path: Path) -> None:
    """Space-separated TOML scalars, quoted values with spaces, or a `.toml` file flattened to
    dotted keys, as flwr's parse_config_args reads `--executor-config`."""
    pairs = Config(executor_config='verbose=true flwr-dir="a dir" rounds=3')
    assert executor_settings(pairs) == {"verbose": True, "flwr-dir": "a dir", "rounds": 3}
    file = tmp_path / "executor.toml"
    file.write_text('superlink = "127.0.0.1:9091"\n[extra]\nlevel = 2\n')
    assert executor_settings(Config(executor_config=str(file))) == {
        "superlink": "127.0.0.1:9091",
        "extra.level": 2,
    }
    with pytest.raises(ConfigError, match="cannot read the TOML file"):
        executor_settings(Config(executor_config=str(tmp_path / "missing.toml")))
    with pytest.raises(ConfigError, match="`superlink` value should be of type `str`"):
        executor_settings(Config(executor_config="superlink=3"))


def test_our_defaults_are_five_seconds_of_grace_and_the_references_message_limit() -> None:
    assert Config().shutdown_grace == 5.0
    assert Config().max_message_bytes == MAX_MESSAGE_BYTES == 2**31 - 1


# --- Config.check: the reference's start-up checks, one error type ---------------------------


def checked(**options: Any) -> ConfigError:
    """The error ``check`` raises for these options (plaintext unless they say otherwise)."""
    with pytest.raises(ConfigError) as error:
        Config(**{"insecure": True, **options}).check()
    return error.value


@pytest.mark.parametrize(
    "option",
    [
        "serverappio_api_address",
        "exec_api_address",
        "simulationio_api_address",
        "fleet_api_address",
        "metrics_address",
    ],
)
def test_an_unparsable_address_is_exit_code_600(option: str) -> None:
    error = checked(**{option: "no-port"})
    assert isinstance(error, AddressError)
    assert (str(error), error.exit_code, error.plain) == (
        "Address (no-port) cannot be parsed.",
        ExitCode.COMMON_ADDRESS_INVALID,
        False,
    )


def test_no_certificates_without_insecure_is_one_error_line() -> None:
    error = checked(insecure=False)
    assert str(error).startswith("Certificates are required unless running in insecure mode.")
    assert (error.exit_code, error.plain) == (None, False)


def test_some_certificates_are_the_references_plain_exit(tmp_path: Path) -> None:
    error = checked(insecure=False, ssl_certfile=tmp_path / "cert.pem")
    assert str(error).startswith("You need to provide valid file paths to `--ssl-certfile`")
    assert error.plain


def test_a_certificate_that_is_no_file_is_named_in_a_plain_exit(
    tls_files: CertificateFiles, tmp_path: Path
) -> None:
    error = checked(
        insecure=False,
        ssl_certfile=tls_files.certfile,
        ssl_keyfile=tmp_path / "missing.key",
        ssl_ca_certfile=tls_files.ca_certfile,
    )
    assert (str(error), error.plain) == (
        "Path argument `--ssl-keyfile` does not point to a file.",
        True,
    )


def test_files_openssl_cannot_use_are_a_tls_error(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("cert", "key", "ca")}
    for path in files.values():
        path.write_text("PEM")
    error = checked(
        insecure=False,
        ssl_certfile=files["cert"],
        ssl_keyfile=files["key"],
        ssl_ca_certfile=files["ca"],
    )
    assert isinstance(error, TlsError)
    assert "--ssl-certfile" in str(error)
    assert not error.plain


def test_other_executors_and_fleet_mismatches_are_one_error_line() -> None:
    assert "cannot be used" in str(checked(executor="my.module:executor"))
    assert "1 address(es) for 2 Fleet API type(s)" in str(
        checked(fleet_api_type="grpc-rere,rest", fleet_api_address="127.0.0.1:1")
    )


def test_replica_ids_and_leases_are_checked_for_embedders_too() -> None:
    """An embedder's Config gets the CLI's checks: the id is 1-64 of [A-Za-z0-9._-] (it
    names the replica in log lines, metrics and run details), the lease a finite positive
    number of seconds. Generated ids pass and differ per Config."""
    for bad_id in ("", "a/b", "é", "x" * 65):
        assert "--replica-id" in str(checked(replica_id=bad_id))
    for bad_lease in (0.0, -1.0, float("inf"), float("nan")):
        assert "--replica-lease" in str(checked(replica_lease=bad_lease))
    Config(insecure=True, replica_id="A-z.0_9" + "x" * 57, replica_lease=0.1).check()
    first, second = Config(insecure=True), Config(insecure=True)
    first.check()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,55}-[0-9a-f]{8}", first.replica_id)
    assert first.replica_id != second.replica_id


def test_a_key_list_with_rest_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys.csv"
    keys.write_text(NodeKey().ssh())
    error = checked(fleet_api_type="rest", auth_list_public_keys=keys)
    assert "--auth-list-public-keys cannot be used with --fleet-api-type rest" in str(error)
    assert not error.plain


def test_a_missing_key_list_is_the_references_plain_exit(tmp_path: Path) -> None:
    error = checked(auth_list_public_keys=tmp_path / "keys.csv")
    assert isinstance(error, KeyListError)
    assert error.plain
    assert "CSV file does not exist" in str(error)


def test_the_simulation_executor_reads_no_fleet_or_key_list_option(tmp_path: Path) -> None:
    """As the reference: with that executor a bad Fleet address or key list is not looked at."""
    Config(
        insecure=True,
        executor=SIMULATION_EXECUTOR,
        fleet_api_address="no-port",
        auth_list_public_keys=tmp_path / "missing.csv",
    ).check()


def test_warnings_come_in_the_references_order(tmp_path: Path) -> None:
    warnings: list[str] = []
    Config(
        insecure=True, fleet_api_num_workers=4, auth_superlink_public_key=tmp_path / "key"
    ).check(warnings.append)
    assert [warning.split()[:3] for warning in warnings] == [
        ["Option", "`--insecure`", "was"],
        ["The", "Fleet", "API"],
        ["The", "`--auth-superlink-private-key`", "and"],
    ]
    assert "You have specified 4 workers." in warnings[1]


def test_a_valid_config_passes_and_warns_of_nothing(tls_files: CertificateFiles) -> None:
    warnings: list[str] = []
    Config(
        ssl_certfile=tls_files.certfile,
        ssl_keyfile=tls_files.keyfile,
        ssl_ca_certfile=tls_files.ca_certfile,
    ).check(warnings.append)
    assert warnings == []


def test_the_files_are_read_once_by_the_check_and_kept(
    tls_files: CertificateFiles, tmp_path: Path
) -> None:
    """The runtime serves what the CLI's check loaded, even if the files went away since."""
    copies = {}
    for name, source in (
        ("cert", tls_files.certfile),
        ("key", tls_files.keyfile),
        ("ca", tls_files.ca_certfile),
    ):
        copies[name] = tmp_path / name
        copies[name].write_bytes(source.read_bytes())
    node = NodeKey()
    keys = tmp_path / "keys.csv"
    keys.write_text(node.ssh())
    config = Config(
        ssl_certfile=copies["cert"],
        ssl_keyfile=copies["key"],
        ssl_ca_certfile=copies["ca"],
        auth_list_public_keys=keys,
    )
    config.check()
    tls = config.tls
    for path in (*copies.values(), keys):
        path.unlink()
    assert config.tls is tls
    assert tls.grpc is not None
    assert config.known_public_keys == [node.pem]
    with pytest.raises(ConfigError, match="does not point to a file"):
        replace(config, shutdown_grace=1.0).check()  # a new Config reads its files afresh


# --- the key list (--auth-list-public-keys) ------------------------------------------------


def test_key_list_loads_openssh_ec_keys(tmp_path: Path) -> None:
    first, second = NodeKey(), NodeKey()
    csv_file = tmp_path / "keys.csv"
    csv_file.write_text(f"{first.ssh()},{second.ssh()}\n")
    assert load_known_public_keys(csv_file) == [first.pem, second.pem]


@pytest.mark.parametrize(
    "content",
    [
        "not a key",
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode(),
    ],
    ids=["garbage", "rsa"],
)
def test_key_list_with_anything_but_ec_keys_is_one_clear_error(
    tmp_path: Path, content: str
) -> None:
    csv_file = tmp_path / "keys.csv"
    csv_file.write_text(content)
    with pytest.raises(KeyListError, match="Unable to parse the public keys in the CSV file"):
        load_known_public_keys(csv_file)


def test_key_list_that_is_not_utf8_text_is_one_clear_error(tmp_path: Path) -> None:
    csv_file = tmp_path / "keys.csv"
    csv_file.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(KeyListError, match="Unable to parse the public keys in the CSV file"):
        load_known_public_keys(csv_file)


def test_a_missing_key_list_is_the_reference_error(tmp_path: Path) -> None:
    missing = tmp_path / "keys.csv"
    with pytest.raises(KeyListError, match=f"CSV file does not exist: {missing}. Please provide"):
        load_known_public_keys(missing)


def test_a_key_list_that_cannot_be_read_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyListError, match="Unable to read the known public keys CSV file"):
        load_known_public_keys(tmp_path)


def test_a_config_that_passed_is_not_checked_again(tmp_path: Path) -> None:
    """The CLI checks a Config, then the SuperLink does: its files are read once, not twice."""
    certificates = tmp_path / "ca.pem"
    certificates.write_text("not read twice")
    config = Config(insecure=True, executor_config=f'root-certificates="{certificates}"')
    config.check()
    certificates.unlink()
    config.check()  # passes: the file is not read again
    with pytest.raises(ConfigError, match="cannot read root-certificates"):
        replace(config).check()  # a new Config is checked afresh
