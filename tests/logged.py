"""What we and the libraries under us logged during a test, and the check that none of it
is a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from superlink_async.logs import logger


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Watching our logger and the root, a record that propagates arrives twice in a row.
        if not self.records or self.records[-1] is not record:
            self.records.append(record)


@contextmanager
def recorded() -> Iterator[list[logging.LogRecord]]:
    """Every record, down to DEBUG, logged inside the block, whatever handlers are set.

    Ours is recorded on its own logger too: ``configure_logging`` stops it propagating.
    """
    handler = _Records()
    watched = [logging.getLogger(), logger]
    levels = [each.level for each in watched]
    for each in watched:
        each.addHandler(handler)
        each.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        for each, level in zip(watched, levels, strict=True):
            each.removeHandler(handler)
            each.setLevel(level)


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    """Input a client controls must never be paid for with a traceback in the log."""
    with_traceback = [
        f"{record.name}: {record.getMessage()}"
        for record in records
        if record.exc_info or "Traceback" in record.getMessage()
    ]
    assert not with_traceback, with_traceback
