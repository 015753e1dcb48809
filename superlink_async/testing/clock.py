"""A clock that tests move by hand, for what takes ``clock=`` (state, services, node auth)."""

from __future__ import annotations

#: Where a ``FakeClock`` starts unless told: after flwr's minimum ``created_at`` (2025-02-28).
START = 1_750_000_000.0


class FakeClock:
    """Stands still until ``advance`` or an assignment to ``now`` moves it; call it to read it."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        """The time it shows."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds
