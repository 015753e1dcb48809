"""The hpack tables we read and the function we replace, and ``check`` that they are there.

``transports.grpc.huffman`` composes hpack's Huffman state machine (a table of 4,096
``(next state, flags, symbol)`` steps of half a byte) into steps of a byte, and puts its
decoder in place of the one hpack's ``Decoder`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import hpack.hpack
import hpack.huffman_table

from superlink_async._internals._check import Fence

_FENCE = Fence("hpack")

Decoder = Callable[[bytes | bytearray | memoryview | None], bytes]


class HuffmanMachine(NamedTuple):
    """hpack's Huffman state machine and the flags of its steps."""

    #: At ``state * 16 + nibble``: (next state, flags, symbol).
    steps: Sequence[tuple[int, int, int]]
    #: The string may end after this step (only padding bits are pending).
    complete: int
    #: The step emits ``symbol``.
    emit_symbol: int
    #: The input is not a valid Huffman string.
    fail: int


def huffman_machine() -> HuffmanMachine:
    """The Huffman state machine of hpack, checked first."""
    check()
    table = hpack.huffman_table
    return HuffmanMachine(
        table.HUFFMAN_TABLE, table.HUFFMAN_COMPLETE, table.HUFFMAN_EMIT_SYMBOL, table.HUFFMAN_FAIL
    )


def replace_huffman_decoder(decoder: Decoder) -> None:
    """Have hpack's ``Decoder`` decode Huffman-coded strings with ``decoder`` (process-wide)."""
    check()
    hpack.hpack.decode_huffman = decoder  # type: ignore[attr-defined,assignment]


def check() -> None:
    """Fail unless hpack has the tables above and a decoder its ``Decoder`` looks up.

    Replacing a function its callers no longer look up would change nothing, silently.
    """
    fence = _FENCE
    for name in ("HUFFMAN_COMPLETE", "HUFFMAN_EMIT_SYMBOL", "HUFFMAN_FAIL"):
        if not isinstance(fence.attribute(hpack.huffman_table, name), int):
            fence.fail(f"integer flag huffman_table.{name}")
    table = fence.attribute(hpack.huffman_table, "HUFFMAN_TABLE")
    if len(table) != 256 * 16 or any(len(step) != 3 for step in table):
        fence.fail("huffman_table.HUFFMAN_TABLE of 4096 (state, flags, symbol) steps")
    fence.function(hpack.huffman_table, "decode_huffman", ("huffman_string",))
    fence.function(hpack.hpack, "decode_huffman", ("huffman_string",))
    fence.uses(hpack.hpack.Decoder, "_decode_literal", "decode_huffman")
