"""The probe behind the image's HEALTHCHECK, against a real SuperLink in plaintext and TLS."""

from __future__ import annotations

from pathlib import Path

import pytest

from superlink_async import SuperLink
from superlink_async.config import Address
from superlink_async.probe import is_serving
from superlink_async.tls import CertificateFiles
from tests.test_tls import superlink_config

pytestmark = pytest.mark.anyio


async def test_serving_while_running_and_not_after(
    tls_files: CertificateFiles, tmp_path: Path
) -> None:
    config = superlink_config(tls_files, tmp_path, insecure=True)
    exec_api = Address.parse(config.exec_api_address)
    async with SuperLink(config):
        assert await is_serving(exec_api)
    assert not await is_serving(exec_api)


async def test_a_tls_port_needs_the_ca(tls_files: CertificateFiles, tmp_path: Path) -> None:
    """With TLS the image's plaintext check fails, hence the --health-cmd in docker.md.

    The refused plaintext call drops its connection, which makes grpclib cancel the task it
    runs in; the SuperLink block below must still end normally.
    """
    config = superlink_config(tls_files, tmp_path)
    exec_api = Address.parse(config.exec_api_address)
    async with SuperLink(config):
        assert await is_serving(exec_api, str(tls_files.ca_certfile))
        assert not await is_serving(exec_api)
