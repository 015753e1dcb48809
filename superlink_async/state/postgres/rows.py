"""The columns the PostgreSQL backend's queries read, and the rules its statements apply.

The encoding of records in columns is shared with the SQLite backend (``state.columns``).
SQLite statements call the rules themselves (Python functions registered on the
connection); PostgreSQL cannot, so the rules that filter or order rows are written here once
as SQL over the same values, and ``tests/state/test_postgres.py`` checks them against
``rules`` on the server, boundaries included.
"""

from __future__ import annotations

from superlink_async.state.columns import MESSAGE_FIELDS, METADATA_FIELDS

#: ``$1, $2, ...`` for a message's columns (metadata, content, error).
MESSAGE_PLACEHOLDERS = ", ".join(f"${n}" for n in range(1, len(MESSAGE_FIELDS.split(", ")) + 1))
#: A message's metadata columns without its payload: to judge an instruction, not deliver it.
MESSAGE_METADATA_FIELDS = f"{METADATA_FIELDS}, NULL::bytea AS content, NULL::bytea AS error"


def is_online(online_until: str, now: str) -> str:
    """``rules.is_online`` as a SQL condition on two float8 expressions."""
    return f"({online_until} > {now})"


def ttl_lapsed(created_at: str, ttl: str, now: str) -> str:
    """``rules.ttl_lapsed`` as a SQL condition on three float8 expressions."""
    return f"({created_at} + {ttl} <= {now})"


def reapable(replica_id: str, until: str, now: str, reaper: str) -> str:
    """``rules.reapable`` as a SQL condition on text, float8, float8 and text expressions."""
    return f"({replica_id} IS DISTINCT FROM {reaper} AND {until} <= {now})"


def claim_rank(reserved_by: str, replica_id: str) -> str:
    """``rules.claim_rank`` as a SQL expression on two text expressions (NULL: not claimable)."""
    return f"(CASE WHEN {reserved_by} = {replica_id} THEN 0 WHEN {reserved_by} = '' THEN 1 END)"


def row_count(status: str) -> int:
    """How many rows a statement touched, from its status (``DELETE 3``, ``INSERT 0 1``)."""
    return int(status.rsplit(" ", 1)[-1])
