"""Checking the ECDSA signatures of node-auth metadata: the check and where it is made.

Every Fleet call of a 1.18 SuperNode is signed; checking one P-384 signature costs about
0.66 ms of CPU (with the GIL held), a third to a half of all the work a call causes. Node
auth asks a ``SignatureChecker``: ``InlineSignatures`` checks on the event loop, and the
runtime's worker pool (``superlink_async.runtime.signature_workers``) hands checks to worker
processes while the loop is behind.

Nothing is cached by signature: a SuperNode signs every call afresh, so a cache would
only help a benchmark that reuses signatures.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _public_key(pem: bytes) -> ec.EllipticCurvePublicKey | None:
    """Parse the key of each check afresh.

    A parsed P-384 key holds ~3.7 KB of OpenSSL memory once used, so the cache this
    replaced (every node's key, up to 65,536) cost ~3.7 MiB per 1,000 idle nodes, in the
    SuperLink and again in each worker. Parsing is the price: 2-5 % of the loop's time in
    ``make bench``'s profiles (the check itself: 40-55 %).
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def is_signed_by(public_key_pem: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is an ECDSA-SHA256 signature of ``data`` by that EC key."""
    key = _public_key(public_key_pem)
    if key is None:
        return False
    try:
        key.verify(signature, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


class SignatureChecker(Protocol):
    """Where node auth has its signatures checked."""

    async def is_signed_by(self, public_key_pem: bytes, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is an ECDSA-SHA256 signature of ``data`` by that key."""
        ...


class InlineSignatures:
    """Checks on the event loop: for one-CPU machines and for tests."""

    async def is_signed_by(self, public_key_pem: bytes, data: bytes, signature: bytes) -> bool:
        """See ``SignatureChecker``."""
        return is_signed_by(public_key_pem, data, signature)
