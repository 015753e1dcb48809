"""Server TLS from the three ``--ssl-*`` files, decided per listener as flower-superlink does.

The reference serves the Exec API and the gRPC Fleet transports with the server certificate
and key, loads the CA certificate but never asks clients for certificates, and keeps
ServerAppIo plaintext. :func:`listener_tls` makes the same decision once, before anything
binds; ``--serverappio-tls`` (ours) adds TLS to ServerAppIo for external ServerApps.

Broken files end start-up with one :class:`TlsError` naming the flag, the file and the
reason, where the reference dies with a traceback from deep inside gRPC.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from superlink_async.config import ISOLATION_SUBPROCESS, Config, ConfigError

#: What gRPC clients (grpc-core, grpclib) require the server to select.
GRPC_ALPN = "h2"
#: What aiohttp speaks; offered so that ALPN-aware HTTP clients settle on it.
HTTP_ALPN = "http/1.1"


class TlsError(ConfigError):
    """Certificate options that cannot serve TLS; the text says which file and why."""


@dataclass(frozen=True)
class CertificateFiles:
    """The server certificate (chain), its private key and the CA certificate, as PEM files."""

    certfile: Path
    keyfile: Path
    ca_certfile: Path

    @classmethod
    def from_config(cls, config: Config) -> CertificateFiles:
        """The three paths; ``TlsError`` if one is missing (an embedder forgot one)."""
        if config.ssl_certfile and config.ssl_keyfile and config.ssl_ca_certfile:
            return cls(config.ssl_certfile, config.ssl_keyfile, config.ssl_ca_certfile)
        raise TlsError(
            "TLS needs all three of --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile "
            "(or --insecure for plaintext)"
        )


@dataclass(frozen=True)
class ListenerTls:
    """The server context of each kind of listener; ``None`` means plaintext."""

    #: Exec API, Fleet gRPC-rere and GrpcAdapter (ALPN ``h2``).
    grpc: ssl.SSLContext | None
    #: Fleet REST, for aiohttp (ALPN ``http/1.1``).
    rest: ssl.SSLContext | None
    #: ServerAppIo: plaintext unless ``--serverappio-tls``.
    serverappio: ssl.SSLContext | None


def listener_tls(config: Config) -> ListenerTls:
    """Decide and load TLS for every listener; ``TlsError`` before anything binds.

    ``--insecure`` means plaintext everywhere, REST included (the reference still gives
    uvicorn the certificates then, so its REST listener would serve HTTPS).
    """
    if config.serverappio_tls:
        _check_serverappio_tls(config)
    if config.insecure:
        return ListenerTls(grpc=None, rest=None, serverappio=None)
    files = CertificateFiles.from_config(config)
    grpc = grpc_server_context(files)
    return ListenerTls(
        grpc=grpc,
        rest=http_server_context(files),
        serverappio=grpc if config.serverappio_tls else None,
    )


def _check_serverappio_tls(config: Config) -> None:
    """TLS on ServerAppIo only makes sense for ServerApps we do not launch ourselves."""
    if config.insecure:
        raise TlsError("--serverappio-tls cannot be combined with --insecure (plaintext)")
    if config.isolation == ISOLATION_SUBPROCESS:
        raise TlsError(
            "--serverappio-tls cannot be used with --isolation subprocess: the flwr-serverapp "
            "1.18.0 it launches cannot dial TLS (it exits with code 602 without --insecure); "
            "use --isolation process and start ServerApps that can"
        )


def grpc_server_context(files: CertificateFiles) -> ssl.SSLContext:
    """A context for grpclib's ``Server.start(ssl=...)``: HTTP/2 over TLS 1.2 or later."""
    return _server_context(files, GRPC_ALPN)


def http_server_context(files: CertificateFiles) -> ssl.SSLContext:
    """A context for an aiohttp site (``ssl_context=``): HTTP/1.1 over TLS 1.2 or later."""
    return _server_context(files, HTTP_ALPN)


def _server_context(files: CertificateFiles, alpn: str) -> ssl.SSLContext:
    """Check the files, then load them; client certificates are never requested.

    The CA is loaded only so that a broken CA file fails here, as it fails the reference;
    like the reference's ``require_client_auth=False``, it verifies nobody.
    """
    _check_files(files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([alpn])
    try:
        context.load_cert_chain(files.certfile, files.keyfile)
        context.load_verify_locations(cafile=files.ca_certfile)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"OpenSSL cannot use the TLS certificate files: {exc}") from exc
    return context


def _check_files(files: CertificateFiles) -> None:
    """Name the flag, file and fault of the first unusable file, which OpenSSL would not."""
    leaf = _certificates("--ssl-certfile", files.certfile)[0]
    _certificates("--ssl-ca-certfile", files.ca_certfile)
    data = _read("--ssl-keyfile", files.keyfile)
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as exc:  # cryptography's way of saying "encrypted"
        raise TlsError(
            f"--ssl-keyfile {files.keyfile} is encrypted; give the private key unencrypted"
        ) from exc
    except ValueError as exc:
        raise TlsError(f"--ssl-keyfile {files.keyfile} holds no PEM private key") from exc
    if key.public_key() != leaf.public_key():
        raise TlsError(
            f"--ssl-keyfile {files.keyfile} is not the private key of the certificate in "
            f"--ssl-certfile {files.certfile}"
        )


def _certificates(flag: str, path: Path) -> list[x509.Certificate]:
    data = _read(flag, path)  # outside the try: TlsError is a ValueError too
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsError(f"{flag} {path} holds no PEM certificate") from exc


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{flag} {path} cannot be read: {exc.strerror or exc}") from exc
