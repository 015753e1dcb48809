"""Address parsing and defaults, as flower-superlink 1.18.0 decides them."""

from __future__ import annotations

import re

import pytest

from superlink_async.config import Address, AddressError, Config


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
