"""Server TLS: which listener encrypts, clear errors for unusable files, real handshakes."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from grpclib.client import Channel
from grpclib.exceptions import StreamTerminatedError
from grpclib.health.service import Health
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from superlink_async import Config, SuperLink
from superlink_async.config import ISOLATION_PROCESS, Address
from superlink_async.tls import (
    CertificateFiles,
    TlsError,
    grpc_server_context,
    http_server_context,
    listener_tls,
)
from superlink_async.transports.grpc.server import serve_grpc
from superlink_async.wire import exec_grpc, exec_pb2, run_pb2, serverappio_grpc
from tests.certificates import make_certificates, new_key, write_key
from tests.ports import loopback

pytestmark = pytest.mark.anyio

T = TypeVar("T")

#: Errors a client sees when the server ends the connection during or instead of a handshake.
REFUSED = (ssl.SSLError, ConnectionError, StreamTerminatedError)


def tls_config(files: CertificateFiles, **changes: Any) -> Config:
    """A TLS config with those files; ``changes`` override any field."""
    config = Config(
        ssl_certfile=files.certfile,
        ssl_keyfile=files.keyfile,
        ssl_ca_certfile=files.ca_certfile,
        isolation=ISOLATION_PROCESS,
    )
    return replace(config, **changes)


def client_context(ca_certfile: Path | None) -> ssl.SSLContext:
    """What a gRPC client with ``--root-certificates`` does: trust that CA, offer h2."""
    context = ssl.create_default_context(cafile=None if ca_certfile is None else str(ca_certfile))
    context.set_alpn_protocols(["h2"])
    return context


# --- which listener gets which context -----------------------------------------------------


def test_insecure_means_plaintext_everywhere(tls_files: CertificateFiles) -> None:
    """--insecure wins over certificate paths, for REST too (unlike the reference)."""
    tls = listener_tls(tls_config(tls_files, insecure=True))
    assert (tls.grpc, tls.rest, tls.serverappio) == (None, None, None)


def test_exec_fleet_and_rest_are_encrypted_serverappio_is_not(
    tls_files: CertificateFiles,
) -> None:
    tls = listener_tls(tls_config(tls_files))
    assert tls.grpc is not None
    assert tls.rest is not None
    assert tls.serverappio is None


def test_serverappio_tls_reuses_the_grpc_context(tls_files: CertificateFiles) -> None:
    tls = listener_tls(tls_config(tls_files, serverappio_tls=True))
    assert tls.serverappio is tls.grpc is not None


def test_contexts_need_tls_1_2_and_never_ask_for_client_certificates(
    tls_files: CertificateFiles,
) -> None:
    for context in (grpc_server_context(tls_files), http_server_context(tls_files)):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        assert context.verify_mode is ssl.CERT_NONE


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"isolation": "subprocess"}, "code 602", id="subprocess-isolation"),
        pytest.param({"insecure": True}, "--insecure", id="insecure"),
    ],
)
def test_serverappio_tls_is_refused_where_it_cannot_work(
    tls_files: CertificateFiles, changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(TlsError, match="--serverappio-tls") as error:
        listener_tls(tls_config(tls_files, serverappio_tls=True, **changes))
    assert expected in str(error.value)


def test_an_embedder_without_all_three_files_is_told_so(tls_files: CertificateFiles) -> None:
    with pytest.raises(TlsError, match="needs all three"):
        listener_tls(tls_config(tls_files, ssl_ca_certfile=None))


# --- unusable files: one clear error naming the flag and the file --------------------------


def _garbage(path: Path) -> Path:
    path.write_text("not PEM\n")
    return path


def _foreign_key(path: Path) -> Path:
    return write_key(path, new_key())


def _encrypted_key(path: Path) -> Path:
    return write_key(path, new_key(), password=b"secret")


def _missing(path: Path) -> Path:
    return path / "absent.pem"


@pytest.mark.parametrize(
    ("field", "spoil", "expected"),
    [
        ("certfile", _garbage, "--ssl-certfile .* holds no PEM certificate"),
        ("ca_certfile", _garbage, "--ssl-ca-certfile .* holds no PEM certificate"),
        ("keyfile", _garbage, "--ssl-keyfile .* holds no PEM private key"),
        ("keyfile", _foreign_key, "--ssl-keyfile .* is not the private key of the certificate"),
        ("keyfile", _encrypted_key, "--ssl-keyfile .* is encrypted"),
        ("certfile", _missing, "--ssl-certfile .* cannot be read: No such file"),
    ],
)
def test_unusable_files_give_one_clear_error(
    tmp_path: Path,
    field: str,
    spoil: Callable[[Path], Path],
    expected: str,
) -> None:
    files = make_certificates(tmp_path)
    spoiled = replace(files, **{field: spoil(tmp_path / f"spoiled-{field}")})
    with pytest.raises(TlsError, match=expected):
        grpc_server_context(spoiled)


def test_what_only_openssl_refuses_is_still_one_clear_error(tmp_path: Path) -> None:
    """A matching pair that OpenSSL's security level rejects: its reason, no traceback."""
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak = make_certificates(tmp_path, server_key=weak_key)
    with pytest.raises(TlsError, match="OpenSSL cannot use the TLS certificate files"):
        grpc_server_context(weak)


# --- real handshakes -----------------------------------------------------------------------


@asynccontextmanager
async def health_server(context: ssl.SSLContext | None) -> AsyncIterator[str]:
    """``serve_grpc`` with grpclib's Health service on a free port, for as long as the block."""
    address = loopback()
    async with anyio.create_task_group() as group:
        await group.start(serve_grpc, [Health()], Address.parse(address), "test", context)
        yield address
        group.cancel_scope.cancel()


async def unary(
    address: str, context: ssl.SSLContext | None, call: Callable[[Channel], Awaitable[T]]
) -> T:
    """One call on a fresh channel, in a task of its own.

    grpclib ends a call whose connection is lost by cancelling the calling task and never
    uncancels it (Python >= 3.11); in the test's own task that would break anyio's scopes.
    """
    parsed = Address.parse(address)

    async def call_once() -> T:
        with closing(Channel(parsed.host, parsed.port, ssl=context)) as channel:
            return await call(channel)

    with anyio.fail_after(10):
        return await asyncio.create_task(call_once())


async def check_health(address: str, context: ssl.SSLContext | None) -> int:
    reply = await unary(address, context, lambda ch: HealthStub(ch).Check(HealthCheckRequest()))
    return reply.status


async def test_a_client_trusting_the_ca_talks_to_a_tls_listener(
    tls_files: CertificateFiles,
) -> None:
    async with health_server(grpc_server_context(tls_files)) as address:
        status = await check_health(address, client_context(tls_files.ca_certfile))
    assert status == HealthCheckResponse.SERVING


async def test_a_plaintext_client_is_refused(tls_files: CertificateFiles) -> None:
    async with health_server(grpc_server_context(tls_files)) as address:
        with pytest.raises(REFUSED):
            await check_health(address, None)


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    tls_files: CertificateFiles,
) -> None:
    async with health_server(grpc_server_context(tls_files)) as address:
        with pytest.raises(ssl.SSLCertVerificationError):
            await check_health(address, client_context(None))


# --- the SuperLink: Exec over TLS, ServerAppIo plaintext unless opted in -------------------


def superlink_config(files: CertificateFiles, tmp_path: Path, **changes: Any) -> Config:
    return tls_config(
        files,
        storage_dir=tmp_path / "ffs",
        exec_api_address=loopback(),
        serverappio_api_address=loopback(),
        fleet_api_address=loopback(),
        shutdown_grace=1.0,
        **changes,
    )


async def list_runs(address: str, context: ssl.SSLContext | None) -> int:
    request = exec_pb2.ListRunsRequest()
    reply = await unary(address, context, lambda ch: exec_grpc.ExecStub(ch).ListRuns(request))
    return len(reply.run_dict)


async def get_run_status(address: str, context: ssl.SSLContext | None) -> int:
    request = run_pb2.GetRunStatusRequest(run_ids=[1])
    reply = await unary(
        address, context, lambda ch: serverappio_grpc.ServerAppIoStub(ch).GetRunStatus(request)
    )
    return len(reply.run_status_dict)


async def test_the_superlink_serves_exec_over_tls_and_serverappio_in_plaintext(
    tls_files: CertificateFiles, tmp_path: Path
) -> None:
    config = superlink_config(tls_files, tmp_path)
    async with SuperLink(config):
        assert await list_runs(config.exec_api_address, client_context(tls_files.ca_certfile)) == 0
        with pytest.raises(REFUSED):
            await list_runs(config.exec_api_address, None)
        assert await get_run_status(config.serverappio_api_address, None) == 0


async def test_serverappio_tls_encrypts_serverappio(
    tls_files: CertificateFiles, tmp_path: Path
) -> None:
    config = superlink_config(tls_files, tmp_path, serverappio_tls=True)
    async with SuperLink(config):
        trusting = client_context(tls_files.ca_certfile)
        assert await get_run_status(config.serverappio_api_address, trusting) == 0
        with pytest.raises(REFUSED):
            await get_run_status(config.serverappio_api_address, None)
