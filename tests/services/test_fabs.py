"""parse_fab: the same identity flwr 1.18.0 derives, and a clear FabError for every bad FAB."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from collections.abc import Iterator

import pytest
from flwr.cli.build import build
from flwr.cli.config_utils import get_fab_metadata
from flwr.cli.new.new import MlFramework, new
from flwr.common.config import flatten_dict, get_fab_config

from superlink_async.services.fabs import MAX_PYPROJECT_SIZE, FabError, FabInfo, parse_fab

VALID_PYPROJECT = """\
[project]
name = "quickstart"
version = "2.1.0"

[tool.flwr.app]
publisher = "flwrlabs"

[tool.flwr.app.components]
serverapp = "quickstart.server_app:app"
clientapp = "quickstart.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
fraction-fit = 0.5
use-gpu = false
strategy = "fedavg"

[tool.flwr.app.config.model]
name = "cnn"
layers.hidden = 64
"""


def make_fab(pyproject: str | bytes | None, *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip laid out like a FAB: ``pyproject.toml`` (unless None), a module, ``.info/CONTENT``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        if pyproject is not None:
            archive.writestr("pyproject.toml", pyproject)
        archive.writestr("quickstart/server_app.py", "app = None\n")
        archive.writestr(".info/CONTENT", "")
    return buffer.getvalue()


def set_declared_size(fab: bytes, size: int) -> bytes:
    """Overwrite the uncompressed size that the first central directory entry declares."""
    data = bytearray(fab)
    entry = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, entry + 24, size)
    return bytes(data)


def rejection(content: bytes) -> str:
    """The message of the FabError that parse_fab raises for ``content``."""
    with pytest.raises(FabError) as raised:
        parse_fab(content)
    return str(raised.value)


@pytest.fixture(scope="module")
def cli_fab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """A FAB made as a user makes one: ``flwr new`` (NumPy template), then ``flwr build``."""
    workdir = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        new(app_name="numpy-app", framework=MlFramework.NUMPY, username="alice")
        fab_filename, _ = build(app=workdir / "numpy-app")
    yield (workdir / fab_filename).read_bytes()


def test_cli_built_fab_gives_the_fab_id_and_version_flwr_computes(cli_fab: bytes) -> None:
    fab_id, fab_version = get_fab_metadata(cli_fab)
    info = parse_fab(cli_fab)
    assert (info.fab_id, info.fab_version) == (fab_id, fab_version) == ("alice/numpy-app", "1.0.0")


def test_cli_built_fab_config_defaults_match_flwrs_flattened_config(cli_fab: bytes) -> None:
    expected = flatten_dict(get_fab_config(cli_fab)["tool"]["flwr"]["app"]["config"])
    assert dict(parse_fab(cli_fab).config) == expected == {"num-server-rounds": 3}


def test_nested_config_tables_flatten_to_dotted_keys_like_flwr() -> None:
    fab = make_fab(VALID_PYPROJECT)
    expected = flatten_dict(get_fab_config(fab)["tool"]["flwr"]["app"]["config"])
    assert parse_fab(fab) == FabInfo(
        fab_id="flwrlabs/quickstart",
        fab_version="2.1.0",
        config={
            "num-server-rounds": 3,
            "fraction-fit": 0.5,
            "use-gpu": False,
            "strategy": "fedavg",
            "model.name": "cnn",
            "model.layers.hidden": 64,
        },
    )
    assert dict(parse_fab(fab).config) == expected


def test_fab_without_config_table_has_empty_defaults() -> None:
    pyproject = VALID_PYPROJECT.split("[tool.flwr.app.config]", maxsplit=1)[0]
    assert dict(parse_fab(make_fab(pyproject)).config) == {}


def test_stored_uncompressed_fab_is_accepted() -> None:
    info = parse_fab(make_fab(VALID_PYPROJECT, compression=zipfile.ZIP_STORED))
    assert info.fab_id == "flwrlabs/quickstart"


def test_config_defaults_are_read_only() -> None:
    config = parse_fab(make_fab(VALID_PYPROJECT)).config
    with pytest.raises(TypeError):
        config["num-server-rounds"] = 1  # type: ignore[index]


def test_non_zip_bytes_fail_with_the_reference_message() -> None:
    """The reference logs "Could not start run: File is not a zip file"; keep the wording."""
    with pytest.raises(zipfile.BadZipFile, match=r"^File is not a zip file$"):
        get_fab_metadata(b"definitely not a zip")
    assert rejection(b"definitely not a zip") == "File is not a zip file"


def test_empty_bytes_are_not_a_zip() -> None:
    assert rejection(b"") == "File is not a zip file"


def test_zip_without_pyproject_is_rejected() -> None:
    assert rejection(make_fab(None)) == "FAB has no pyproject.toml"


def test_pyproject_outside_the_archive_root_does_not_count() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("quickstart/pyproject.toml", VALID_PYPROJECT)
    assert rejection(buffer.getvalue()) == "FAB has no pyproject.toml"


def test_pyproject_declared_larger_than_1_mib_is_refused_before_inflating() -> None:
    """A highly compressible member (zip bomb) is judged by its declared size alone."""
    bomb = make_fab(VALID_PYPROJECT + "#" * MAX_PYPROJECT_SIZE)
    assert len(bomb) < 10_000
    assert rejection(bomb) == "pyproject.toml in FAB is larger than 1048576 bytes"


def test_pyproject_of_exactly_1_mib_is_accepted() -> None:
    padded = VALID_PYPROJECT + "#" * (MAX_PYPROJECT_SIZE - len(VALID_PYPROJECT))
    assert parse_fab(make_fab(padded)).fab_id == "flwrlabs/quickstart"


def test_understated_size_is_caught_without_inflating_the_real_payload() -> None:
    """A header that claims 100 bytes over 64 MiB of deflated data must not cost 64 MiB."""
    bomb = set_declared_size(make_fab(" " * (64 * 1024 * 1024)), 100)
    tracemalloc.start()
    try:
        assert rejection(bomb) == "Bad CRC-32 for file 'pyproject.toml'"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_corrupt_deflate_stream_is_a_fab_error() -> None:
    fab = bytearray(make_fab(VALID_PYPROJECT))
    header = fab.find(b"PK\x03\x04")
    name_length, extra_length = struct.unpack_from("<HH", fab, header + 26)
    start = header + 30 + name_length + extra_length
    fab[start : start + 16] = b"\xff" * 16
    assert rejection(bytes(fab)).startswith("Cannot read pyproject.toml from FAB (error: ")


def test_encrypted_pyproject_is_a_fab_error() -> None:
    fab = bytearray(make_fab(VALID_PYPROJECT))
    entry = fab.find(b"PK\x01\x02")
    fab[entry + 8] |= 0x01  # general purpose flag bit 0: encrypted
    assert rejection(bytes(fab)) == (
        "Cannot read pyproject.toml from FAB (RuntimeError: File 'pyproject.toml' is encrypted, "
        "password required for extraction)"
    )


def test_pyproject_that_is_not_utf8_is_rejected() -> None:
    assert rejection(make_fab(b"[project]\nname = '\xff'\n")) == "pyproject.toml is not valid UTF-8"


def test_pyproject_that_is_not_toml_is_rejected() -> None:
    assert rejection(make_fab("[project\nname = ")).startswith("Invalid TOML in pyproject.toml: ")


def _without(line: str) -> str:
    assert line in VALID_PYPROJECT
    return VALID_PYPROJECT.replace(line, "")


# (pyproject.toml, FabError message, whether flwr 1.18.0 rejects it too)
MALFORMED = {
    "no-project": (
        _without('[project]\nname = "quickstart"\nversion = "2.1.0"\n'),
        "Missing [project] section",
        True,
    ),
    "no-name": (_without('name = "quickstart"\n'), "Missing [project] name", True),
    "no-version": (_without('version = "2.1.0"\n'), "Missing [project] version", True),
    "no-flwr-app": (
        "[project]\nname = 'quickstart'\nversion = '2.1.0'\n",
        "Missing [tool.flwr.app] section",
        True,
    ),
    "no-publisher": (
        _without('publisher = "flwrlabs"\n'),
        "Missing [tool.flwr.app] publisher",
        True,
    ),
    "no-components": (
        _without(
            "[tool.flwr.app.components]\n"
            'serverapp = "quickstart.server_app:app"\n'
            'clientapp = "quickstart.client_app:app"\n'
        ),
        "Missing [tool.flwr.app.components] section",
        True,
    ),
    "no-serverapp": (
        _without('serverapp = "quickstart.server_app:app"\n'),
        "Missing [tool.flwr.app.components] serverapp",
        True,
    ),
    "no-clientapp": (
        _without('clientapp = "quickstart.client_app:app"\n'),
        "Missing [tool.flwr.app.components] clientapp",
        True,
    ),
    "serverapp-without-attribute": (
        VALID_PYPROJECT.replace('"quickstart.server_app:app"', '"quickstart.server_app"'),
        "[tool.flwr.app.components] serverapp 'quickstart.server_app' is not <module>:<attribute>",
        True,
    ),
    "clientapp-without-module": (
        VALID_PYPROJECT.replace('"quickstart.client_app:app"', '":app"'),
        "[tool.flwr.app.components] clientapp ':app' is not <module>:<attribute>",
        True,
    ),
    "config-list-value": (
        VALID_PYPROJECT.replace("num-server-rounds = 3", "num-server-rounds = [3]"),
        "[tool.flwr.app.config] num-server-rounds must be an int, float, bool or string (got list)",
        True,
    ),
    "nested-config-datetime-value": (
        VALID_PYPROJECT.replace('name = "cnn"', "name = 2024-10-01"),
        "[tool.flwr.app.config] model.name must be an int, float, bool or string (got date)",
        True,
    ),
    "project-not-a-table": (
        "project = 'quickstart'\n" + VALID_PYPROJECT.split('version = "2.1.0"\n', 1)[1],
        "[project] is not a table",
        True,
    ),
    # Stricter than flwr, which accepts these and only fails later (or installs oddly):
    "version-not-a-string": (
        VALID_PYPROJECT.replace('version = "2.1.0"', "version = 2"),
        "[project] version must be a non-empty string",
        False,
    ),
    "empty-publisher": (
        VALID_PYPROJECT.replace('publisher = "flwrlabs"', 'publisher = ""'),
        "[tool.flwr.app] publisher must be a non-empty string",
        False,
    ),
    "slash-in-publisher": (
        VALID_PYPROJECT.replace('publisher = "flwrlabs"', 'publisher = "flwr/labs"'),
        "Invalid FAB ID flwr/labs/quickstart: '/' in publisher or name",
        False,
    ),
}


@pytest.mark.parametrize(
    ("pyproject", "message", "flwr_rejects"), MALFORMED.values(), ids=MALFORMED
)
def test_each_malformed_pyproject_gives_fab_error_with_its_message(
    pyproject: str, message: str, flwr_rejects: bool
) -> None:
    fab = make_fab(pyproject)
    assert rejection(fab) == message
    if flwr_rejects:
        with pytest.raises(ValueError):
            get_fab_metadata(fab)


def test_every_problem_is_reported_in_one_message() -> None:
    pyproject = "[project]\nversion = 1\n[tool.flwr.app]\n"
    assert rejection(make_fab(pyproject)) == (
        "Missing [project] name; [project] version must be a non-empty string; "
        "Missing [tool.flwr.app] publisher; Missing [tool.flwr.app.components] section"
    )


def test_fab_error_is_a_value_error() -> None:
    """Callers that catch ValueError (as flwr's executor does) keep working."""
    assert issubclass(FabError, ValueError)
