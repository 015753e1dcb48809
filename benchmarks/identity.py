"""The node-authentication metadata a 1.18.0 SuperNode attaches to every Fleet call.

A SuperNode without user keys makes a SECP384R1 key pair per connection and signs
``datetime.now(timezone.utc).isoformat()`` on every call. Signing costs ~0.2 ms, so a node
here signs at most once per wall-clock second and reuses that timestamp within the second:
the server still receives, parses and verifies exactly what a SuperNode sends, and the
timestamp stays well inside the reference's -5 s..15 s acceptance window.
"""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PUBLIC_KEY_HEADER = "flwr-public-key-bin"
TIMESTAMP_HEADER = "flwr-timestamp"
SIGNATURE_HEADER = "flwr-signature-bin"

AuthMetadata = tuple[tuple[str, bytes], tuple[str, str], tuple[str, bytes]]


class NodeIdentity:
    """One simulated SuperNode's key pair and its signed call metadata."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        self._public_pem = self._key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        self._second = -1
        self._metadata: AuthMetadata | None = None

    def metadata(self) -> AuthMetadata:
        """The three auth entries, signed afresh when the wall-clock second changes."""
        now = datetime.now(timezone.utc)
        second = int(now.timestamp())
        if self._metadata is None or second != self._second:
            timestamp = now.isoformat()
            signature = self._key.sign(timestamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
            self._metadata = (
                (PUBLIC_KEY_HEADER, self._public_pem),
                (TIMESTAMP_HEADER, timestamp),
                (SIGNATURE_HEADER, signature),
            )
            self._second = second
        return self._metadata
