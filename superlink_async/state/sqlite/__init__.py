"""The SQLite backend, split by concern.

``backend`` (the ``LinkState`` methods and their SQL), ``schema`` (tables, version,
migrations), ``files`` (path, integrity and journal of a database file), ``rows`` (the columns
and parameters of its queries; the encoding itself is ``state.columns``), ``caches`` (hot
reads answered without a hop, and their invalidation points) and ``session`` (the
synchronous calls operations make on aiosqlite's thread).
"""

from superlink_async.state.sqlite.backend import IN_MEMORY, SqliteLinkState
from superlink_async.state.sqlite.files import WAL_SIZE_LIMIT
from superlink_async.state.sqlite.schema import SCHEMA_VERSION

__all__ = ["IN_MEMORY", "SCHEMA_VERSION", "WAL_SIZE_LIMIT", "SqliteLinkState"]
