"""The HTTP/2 speed-ups give the libraries' own results, and ``install`` puts them in place."""

from __future__ import annotations

import hpack.hpack
import hyperframe.frame
import pytest
from hpack import Decoder, Encoder
from hpack.huffman_table import decode_huffman as hpacks_decoder
from hyperframe.frame import DataFrame

from superlink_async.transports.grpc import huffman, speedups

HYPERFRAMES_REPR = hyperframe.frame._raw_data_repr


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``install``, undone after the test: pytest's other HTTP/2 users keep the originals."""
    monkeypatch.setattr(hpack.hpack, "decode_huffman", hpacks_decoder)
    monkeypatch.setattr(hyperframe.frame, "_raw_data_repr", HYPERFRAMES_REPR)
    speedups.install()


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 16384])
def test_short_data_repr_reads_as_hyperframes(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert speedups.short_data_repr(data) == HYPERFRAMES_REPR(data)
    assert speedups.short_data_repr(None) == HYPERFRAMES_REPR(None)


@pytest.mark.usefixtures("installed")
def test_install_makes_hpack_and_hyperframe_use_ours() -> None:
    headers = [("flwr-timestamp", "2026-11-23T09:20:44.123456+00:00"), ("x", "y" * 50)]
    block = Encoder().encode(headers, huffman=True)
    frame = DataFrame(1, b"\x01" * 16384)

    assert vars(hpack.hpack)["decode_huffman"] is huffman.decode_huffman
    decoded: list[object] = list(Decoder().decode(block))  # str pairs, typed as bytes
    assert decoded == headers
    assert repr(frame) == "DataFrame(stream_id=1, flags=[]): <hex:01010101010101010101...>"
