"""The columns the SQLite backend's queries read, and the parameters they take.

The encoding of records in columns is shared with the PostgreSQL backend (``state.columns``).
An instruction keeps its payload in a table of its own, so that marking it delivered
rewrites a small row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from superlink_async.state.columns import METADATA_FIELDS

METADATA_PLACEHOLDERS = ", ".join("?" * len(METADATA_FIELDS.split(", ")))
MESSAGE_PLACEHOLDERS = f"{METADATA_PLACEHOLDERS}, ?, ?"
#: An instruction's columns without its payload: to judge an instruction, not to deliver it.
#: (A ServerApp polling 1,000 replies of a round read 100 MB of instructions each time.)
MESSAGE_METADATA_FIELDS = f"{METADATA_FIELDS}, NULL AS content, NULL AS error"
#: An instruction's columns with its payload, from within a statement on ``message_ins``.
INSTRUCTION_FIELDS = (
    f"{METADATA_FIELDS}, "
    "(SELECT content FROM message_ins_payload AS p WHERE p.seq = message_ins.seq) AS content, "
    "(SELECT error FROM message_ins_payload AS p WHERE p.seq = message_ins.seq) AS error"
)


def json_ids(values: Iterable[object]) -> str:
    """A JSON array for ``json_each(?)``: any number of ids in one fixed statement."""
    return json.dumps(list(values))
