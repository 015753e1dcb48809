"""Address parsing and defaults, as flower-superlink 1.18.0 decides them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from superlink_async.config import Address, AddressError, Config, ConfigError, executor_settings


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
