"""What our logger recorded during a test, and the check that none of it is a traceback."""

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
        self.records.append(record)


@contextmanager
def recorded() -> Iterator[list[logging.LogRecord]]:
    """Every record our logger emits inside the block (whatever its handlers and level)."""
    handler = _Records()
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def assert_no_traceback(records: list[logging.LogRecord]) -> None:
    """Input a client controls must never be paid for with a traceback in the log."""
    tracebacks = [record.getMessage() for record in records if record.exc_info]
    assert tracebacks == []
