"""flwr 1.18.0's exit codes, their help texts, and the one exception that carries them.

Codes below 100 are graceful (process status 0); codes from 100 up are failures
(status 1) and are logged in the reference's multi-line format.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The codes flower-superlink can end with (flwr.common.exit.ExitCode)."""

    SUCCESS = 0
    GRACEFUL_EXIT_SIGINT = 1
    GRACEFUL_EXIT_SIGQUIT = 2
    GRACEFUL_EXIT_SIGTERM = 3
    SUPERLINK_THREAD_CRASH = 100
    COMMON_ADDRESS_INVALID = 600
    COMMON_MISSING_EXTRA_REST = 601
    COMMON_TLS_NOT_SUPPORTED = 602


HELP_TEXTS: dict[ExitCode, str] = {
    ExitCode.SUPERLINK_THREAD_CRASH: "An important background thread has crashed.",
    ExitCode.COMMON_ADDRESS_INVALID: "Please provide a valid URL, IPv4 or IPv6 address.",
    ExitCode.COMMON_TLS_NOT_SUPPORTED: "Please use the '--insecure' flag.",
}

DOCS_URL = "https://flower.ai/docs/framework/ref-exit-codes/{code}.html"


class SuperLinkExit(Exception):
    """Ends the server with an exit code; the CLI turns it into the process status.

    An embedding application receives it instead of a process exit: ``code`` and
    ``message`` say what happened (for code 100, which task crashed and why).
    """

    def __init__(self, code: ExitCode, message: str = "") -> None:
        super().__init__(format_exit_message(code, message))
        self.code = code
        self.message = message

    @property
    def is_failure(self) -> bool:
        """Codes from 100 up are failures (process status 1)."""
        return self.code >= 100

    @property
    def process_status(self) -> int:
        """The OS status the CLI exits with: 0 for graceful codes, 1 for failures."""
        return 1 if self.is_failure else 0


def format_exit_message(code: ExitCode, message: str = "") -> str:
    """The text flwr logs on exit: the message alone if graceful, the full block if not."""
    help_text = HELP_TEXTS.get(code, "")
    if code < 100:
        return "\n".join(part for part in (message, help_text) if part)
    lines = [f"Exit Code: {int(code)}"]
    lines += [part for part in (message, help_text) if part]
    return (
        "\n".join(lines) + f"\n\nFor more information, visit: <{DOCS_URL.format(code=int(code))}>"
    )
