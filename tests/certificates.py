"""Throw-away PEM files for TLS tests, made at test time (never committed).

EC P-256 keys: generated in microseconds, and served by OpenSSL and gRPC alike.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from superlink_async.tls import CertificateFiles

_VALIDITY = datetime.timedelta(days=1)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_key(
    path: Path, key: CertificateIssuerPrivateKeyTypes, password: bytes | None = None
) -> Path:
    """``key`` as PKCS#8 PEM, encrypted when a password is given."""
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return path


def _certificate(
    subject: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: x509.Name | None,
    signing_key: CertificateIssuerPrivateKeyTypes,
    *,
    is_ca: bool,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def write_certificate(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def make_certificates(
    directory: Path, server_key: CertificateIssuerPrivateKeyTypes | None = None
) -> CertificateFiles:
    """``ca.crt``, and ``server.crt`` + ``server.key`` for 127.0.0.1 and localhost signed by it.

    ``server_key`` replaces the fresh EC key of the server certificate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = new_key()
    ca = _certificate("superlink-async test CA", ca_key, None, ca_key, is_ca=True)
    server_key = server_key or new_key()
    server = _certificate("127.0.0.1", server_key, ca.subject, ca_key, is_ca=False)
    return CertificateFiles(
        certfile=write_certificate(directory / "server.crt", server),
        keyfile=write_key(directory / "server.key", server_key),
        ca_certfile=write_certificate(directory / "ca.crt", ca),
    )
