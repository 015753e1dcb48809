"""Logging in flwr 1.18.0's console format, on our own logger.

Operators and Flower's e2e scripts grep these lines, so the default format is the
reference's: ``<colour>LEVEL <reset>: <pad> message`` on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

logger = logging.getLogger("superlink_async")

_COLOURS = {
    "DEBUG": "\033[94m",
    "INFO": "\033[92m",
    "WARNING": "\033[93m",
    "ERROR": "\033[91m",
    "CRITICAL": "\033[95m",
}
_RESET = "\033[0m"


class FlwrConsoleFormatter(logging.Formatter):
    """``INFO :      message``, coloured as flwr colours it; timestamps only at DEBUG."""

    def __init__(self, with_time: bool) -> None:
        super().__init__()
        self._with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        """Render one record; multi-line messages stay one record."""
        level = record.levelname
        pad = " " * max(8 - len(level), 0)
        prefix = f"{_COLOURS.get(level, '')}{level} {_RESET}"
        if self._with_time:
            prefix += f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')} "
        text = f"{prefix}: {pad} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(level: str | None = None, stream: TextIO | None = None) -> None:
    """Send our logger's records to ``stream`` (stderr) at ``level`` or ``$FLWR_LOG_LEVEL``."""
    name = (level or os.environ.get("FLWR_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FlwrConsoleFormatter(with_time=numeric <= logging.DEBUG))
    logger.handlers[:] = [handler]
    logger.setLevel(numeric)
    logger.propagate = False
