"""The signature check itself: a valid signature by that key, and nothing else, passes."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from superlink_async.services.signatures import is_signed_by
from tests.node_keys import NodeKey

KEYS = [NodeKey() for _ in range(2)]


def signed(key: NodeKey, text: str) -> tuple[bytes, bytes, bytes]:
    data = text.encode()
    return key.pem, data, key.private.sign(data, ec.ECDSA(hashes.SHA256()))


def test_is_signed_by_tells_valid_from_forged_and_garbage() -> None:
    pem, data, signature = signed(KEYS[0], "2026-11-23T06:00:00+00:00")
    assert is_signed_by(pem, data, signature)
    assert not is_signed_by(KEYS[1].pem, data, signature)
    assert not is_signed_by(pem, data + b"1", signature)
    assert not is_signed_by(pem, data, b"not DER")
    assert not is_signed_by(b"not a key", data, signature)
