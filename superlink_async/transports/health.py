"""Health: SERVING only while the state store serves and the server is not draining.

Serving means reads work, and writes too once one found the disk full.

One probe feeds the standard ``grpc.health.v1.Health`` service on every gRPC port (via
grpclib's own implementation) and ``GET /health`` on the REST port.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
from grpclib.health.check import ServiceCheck
from grpclib.health.service import Health

from superlink_async.logs import logger
from superlink_async.state.base import LinkState
from superlink_async.transports.gate import CallGate

#: How long a store probe may take before the server counts as unhealthy (seconds).
PROBE_TIMEOUT = 2.0
#: How long a probe result is reused, so health checks cannot load the store.
PROBE_TTL = 1.0


class HealthProbe:
    """Answers "can this server do its job right now?"."""

    def __init__(self, state: LinkState, gate: CallGate) -> None:
        self._state = state
        self._gate = gate

    async def healthy(self) -> bool:
        """False while draining, or when the state store fails, stalls or is out of space."""
        if self._gate.draining:
            return False
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                await self._state.probe()
        except Exception as exc:  # any failure of the store means "not serving"
            logger.warning("Health probe failed: %s: %s", type(exc).__name__, exc)
            return False
        return True

    def grpc_service(self, servicers: Iterable[Any]) -> Health:
        """``grpc.health.v1.Health`` covering ``servicers`` and the overall ("") status."""
        check = ServiceCheck(self.healthy, check_ttl=PROBE_TTL, check_timeout=PROBE_TIMEOUT)
        return Health({servicer: [check] for servicer in servicers})
