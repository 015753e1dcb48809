"""Free loopback ports for tests that bind real sockets."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback(port: int | None = None) -> str:
    """``127.0.0.1:<port>``, with a free port unless one is given."""
    return f"127.0.0.1:{free_port() if port is None else port}"
