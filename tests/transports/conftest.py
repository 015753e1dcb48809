"""Transport tests reuse the services' wiring (state, FAB store, clock, gRPC stubs)."""

from tests.services.conftest import Clock, Link, link

__all__ = ["Clock", "Link", "link"]
