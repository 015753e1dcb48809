"""State on PostgreSQL (``--database postgresql://…``), split by concern.

``backend`` (the ``LinkState`` methods and their SQL, transactions, the pool), ``schema``
(tables, version, migrations, the advisory lock), ``rows`` (the columns and parameters of
its queries, and the two rules its statements apply; the encoding itself is
``state.columns``) and ``connect`` (where a URL points, connecting, which failures mean
"unavailable").

The entry point: ``await PostgresLinkState.open(url, clock, pool_size=DEFAULT_POOL_SIZE)``.
"""

from superlink_async.state.postgres.backend import DEFAULT_POOL_SIZE, PostgresLinkState
from superlink_async.state.postgres.schema import SCHEMA_VERSION

__all__ = ["DEFAULT_POOL_SIZE", "SCHEMA_VERSION", "PostgresLinkState"]
