"""Logging in flwr 1.18.0's console format, on our own logger.

Operators and Flower's e2e scripts grep these lines, so the default format is the
reference's: ``<colour>LEVEL <reset>: <pad> message`` on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
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


#: Record attributes (set with ``extra=``) that JSON lines carry when present.
CONTEXT_FIELDS = ("run_id", "node_id")
LOG_FORMATS = ("default", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; run and node ids as their own fields.

    With a ``replica`` id every line carries it, so the lines of several SuperLink replicas
    can be collected into one place and still be told apart.
    """

    def __init__(self, replica: str | None = None) -> None:
        super().__init__()
        self._replica = replica

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a single line of JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._replica is not None:
            entry["replica"] = self._replica
        for name in CONTEXT_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(
    level: str | None = None,
    stream: TextIO | None = None,
    log_format: str = "default",
    replica: str | None = None,
) -> None:
    """Send our logger's records to ``stream`` (stderr) at ``level`` or ``$FLWR_LOG_LEVEL``.

    ``log_format`` is the reference's coloured console format ("default", which stays
    byte for byte the reference's, so it gets no replica id) or "json" (with ``replica``).
    """
    name = (level or os.environ.get("FLWR_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(stream or sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(replica)
        if log_format == "json"
        else FlwrConsoleFormatter(with_time=numeric <= logging.DEBUG)
    )
    handler.setFormatter(formatter)
    logger.handlers[:] = [handler]
    logger.setLevel(numeric)
    logger.propagate = False
