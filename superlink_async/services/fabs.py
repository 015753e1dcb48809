"""What a valid Flower App Bundle (FAB) is, and the FAB lookups of the Fleet and ServerAppIo APIs.

A FAB is a zip archive built by ``flwr build``. The SuperLink only ever needs its
``pyproject.toml``, so that one member is read straight from memory: nothing is extracted to
disk, and the member's size is capped because the archive comes from the network. Where
the bytes are kept is the store's business (``superlink_async.state.fab_store``).
"""

from __future__ import annotations

import io
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from superlink_async.services.errors import ServiceError, Status
from superlink_async.state.fab_store import FabStore, InvalidFabHashError
from superlink_async.wire.fab_pb2 import Fab

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = "pyproject.toml"

#: A larger ``pyproject.toml`` is refused before it is inflated (zip bomb guard).
MAX_PYPROJECT_SIZE = 1024 * 1024

#: A ``[tool.flwr.app.config]`` value, as flwr accepts it.
ConfigValue = bool | int | float | str


class FabError(ValueError):
    """The bytes are not a FAB the SuperLink can accept; the message says why."""


@dataclass(frozen=True)
class FabInfo:
    """What a FAB declares about itself."""

    #: ``"<publisher>/<name>"``, as flwr derives it.
    fab_id: str
    #: ``[project] version``.
    fab_version: str
    #: ``[tool.flwr.app.config]`` flattened to dotted keys: the ServerApp's run config defaults.
    config: Mapping[str, ConfigValue]


def parse_fab(content: bytes) -> FabInfo:
    """Validate a FAB's ``pyproject.toml`` as flwr does and return its identity and defaults.

    Raises ``FabError`` for anything flwr would reject, and for what would only fail later
    (e.g. a non-string version, a ``/`` inside the publisher).
    """
    raw = _read_pyproject(content)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FabError("pyproject.toml is not valid UTF-8") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FabError(f"Invalid TOML in pyproject.toml: {exc}") from None
    return _validate(document)


def _read_pyproject(content: bytes) -> bytes:
    """The raw ``pyproject.toml`` member, read from memory and never more than the cap."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            try:
                info = archive.getinfo(PYPROJECT)
            except KeyError:
                raise FabError("FAB has no pyproject.toml") from None
            if info.file_size > MAX_PYPROJECT_SIZE:
                raise FabError(f"pyproject.toml in FAB is larger than {MAX_PYPROJECT_SIZE} bytes")
            # The declared size may lie. zipfile cuts the output at it (and then fails the CRC
            # check), but read() would still inflate the whole stream first; a bounded read
            # inflates no more than it returns.
            with archive.open(PYPROJECT) as member:
                return member.read(MAX_PYPROJECT_SIZE)
    except FabError:
        raise
    except zipfile.BadZipFile as exc:
        # Keeps the reference's wording, e.g. "File is not a zip file".
        raise FabError(str(exc)) from exc
    except Exception as exc:
        # A corrupt or unsupported archive surfaces as many types (zlib.error, EOFError,
        # NotImplementedError, RuntimeError for encryption, ...); all mean "not a usable FAB".
        raise FabError(
            f"Cannot read pyproject.toml from FAB ({type(exc).__name__}: {exc})"
        ) from exc


def _validate(document: dict[str, Any]) -> FabInfo:
    """Check the fields flwr requires, collecting every problem into one message."""
    errors: list[str] = []
    project = _table(document, "project", "[project]", errors)
    tool = document.get("tool")
    flwr = tool.get("flwr") if isinstance(tool, dict) else None
    app = _table(flwr if isinstance(flwr, dict) else {}, "app", "[tool.flwr.app]", errors)

    name = _string(project, "name", "[project]", errors)
    version = _string(project, "version", "[project]", errors)
    publisher = _string(app, "publisher", "[tool.flwr.app]", errors)
    if app is not None:
        components = _table(app, "components", "[tool.flwr.app.components]", errors)
        for key in ("serverapp", "clientapp"):
            ref = _string(components, key, "[tool.flwr.app.components]", errors)
            module, _, attribute = (ref or "").partition(":")
            if ref is not None and not (module and attribute):
                errors.append(
                    f"[tool.flwr.app.components] {key} {ref!r} is not <module>:<attribute>"
                )
    if publisher is not None and name is not None and "/" in publisher + name:
        # flwr-serverapp splits the FAB ID at its one '/' to name the install directory.
        errors.append(f"Invalid FAB ID {publisher}/{name}: '/' in publisher or name")

    config: dict[str, ConfigValue] = {}
    if app is not None and "config" in app:
        if isinstance(app["config"], dict):
            _flatten(app["config"], "", config, errors)
        else:
            errors.append("[tool.flwr.app.config] is not a table")

    # Every missing field has added an error; the None checks are for the type checker.
    if errors or name is None or version is None or publisher is None:
        raise FabError("; ".join(errors))
    return FabInfo(f"{publisher}/{name}", version, MappingProxyType(config))


def _table(
    parent: dict[str, Any] | None, key: str, label: str, errors: list[str]
) -> dict[str, Any] | None:
    """``parent[key]`` if it is a table; otherwise record why not and return ``None``."""
    if parent is None:
        return None
    value = parent.get(key)
    if isinstance(value, dict):
        return value
    errors.append(f"Missing {label} section" if value is None else f"{label} is not a table")
    return None


def _string(table: dict[str, Any] | None, key: str, label: str, errors: list[str]) -> str | None:
    """``table[key]`` if it is a non-empty string; otherwise record why not."""
    if table is None:
        return None
    value = table.get(key)
    if isinstance(value, str) and value:
        return value
    errors.append(
        f"Missing {label} {key}" if value is None else f"{label} {key} must be a non-empty string"
    )
    return None


def _flatten(
    table: dict[str, Any], prefix: str, out: dict[str, ConfigValue], errors: list[str]
) -> None:
    """Join nested config tables into dotted keys, as flwr's ``flatten_dict`` does."""
    for key, item in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(item, dict):
            _flatten(item, dotted, out, errors)
        elif isinstance(item, ConfigValue):
            out[dotted] = item
        else:
            errors.append(
                f"[tool.flwr.app.config] {dotted} must be an int, float, bool or string"
                f" (got {type(item).__name__})"
            )


async def load_fab(fabs: FabStore, fab_hash: str) -> Fab:
    """The stored FAB; INVALID_ARGUMENT for a malformed hash, NOT_FOUND if absent."""
    try:
        content = await fabs.get(fab_hash)
    except InvalidFabHashError as exc:
        raise ServiceError(Status.INVALID_ARGUMENT, str(exc)) from exc
    if content is None:
        raise ServiceError(Status.NOT_FOUND, f"Found no FAB with hash: {fab_hash}")
    return Fab(hash_str=fab_hash, content=content)
