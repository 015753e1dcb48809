"""Our HPACK Huffman decoder answers exactly as hpack's own, only faster."""

from __future__ import annotations

import pytest
from hpack.exceptions import HPACKDecodingError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpacks_decoder
from hypothesis import given
from hypothesis import strategies as st

from superlink_async.transports.grpc import huffman

ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def hpacks_answer(data: bytes) -> bytes | str:
    try:
        return hpacks_decoder(data)
    except HPACKDecodingError as error:
        return str(error)


def our_answer(data: bytes) -> bytes | str:
    try:
        return huffman.decode_huffman(data)
    except HPACKDecodingError as error:
        return str(error)


def test_every_symbol_alone_and_all_together_decode_back() -> None:
    everything = bytes(range(256))
    for text in [bytes([symbol]) for symbol in everything] + [everything, b""]:
        assert huffman.decode_huffman(ENCODER.encode(text)) == text


@given(st.binary(max_size=300))
def test_encoded_text_decodes_as_hpack_decodes_it(text: bytes) -> None:
    encoded = ENCODER.encode(text)
    assert huffman.decode_huffman(encoded) == hpacks_decoder(encoded) == text


@given(st.binary(max_size=64))
def test_any_bytes_give_hpacks_result_or_hpacks_error(data: bytes) -> None:
    """Invalid codes, EOS and bad padding fail as in hpack, with its messages."""
    assert our_answer(data) == hpacks_answer(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff\xff", "Invalid Huffman string"),  # EOS inside the string
        (b"\x00", "Incomplete Huffman string"),  # padding that is not all ones
    ],
)
def test_broken_strings_raise_hpacks_errors(data: bytes, message: str) -> None:
    with pytest.raises(HPACKDecodingError, match=message):
        huffman.decode_huffman(data)
    with pytest.raises(HPACKDecodingError, match=message):
        hpacks_decoder(data)
