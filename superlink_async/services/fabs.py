"""FAB lookups shared by the Fleet and ServerAppIo APIs."""

from __future__ import annotations

from superlink_async.services.errors import ServiceError, Status
from superlink_async.storage import FabStore, InvalidFabHashError
from superlink_async.wire.fab_pb2 import Fab


async def load_fab(fabs: FabStore, fab_hash: str) -> Fab:
    """The stored FAB; INVALID_ARGUMENT for a malformed hash, NOT_FOUND if absent."""
    try:
        content = await fabs.get(fab_hash)
    except InvalidFabHashError as exc:
        raise ServiceError(Status.INVALID_ARGUMENT, str(exc)) from exc
    if content is None:
        raise ServiceError(Status.NOT_FOUND, f"Found no FAB with hash: {fab_hash}")
    return Fab(hash_str=fab_hash, content=content)
