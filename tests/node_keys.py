"""SuperNode key pairs for tests: the metadata a 1.18 SuperNode signs every Fleet call with."""

from __future__ import annotations

from datetime import datetime, timezone

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


class NodeKey:
    """A SuperNode's key pair and the metadata it signs each call with."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP384R1())
        self.pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def ssh(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )

    def metadata(
        self, now: float, skew: float = 0.0, timestamp: str | None = None
    ) -> dict[str, str | bytes]:
        if timestamp is None:
            timestamp = datetime.fromtimestamp(now + skew, tz=timezone.utc).isoformat()
        sent = timestamp
        signature = self.private.sign(sent.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        return {
            "flwr-public-key-bin": self.pem,
            "flwr-timestamp": sent,
            "flwr-signature-bin": signature,
        }
