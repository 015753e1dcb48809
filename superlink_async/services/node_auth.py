"""Node authentication, flwr 1.18 scheme, for the gRPC Fleet API.

Every Fleet call of a 1.18 SuperNode carries its public key (PEM), the current time (ISO)
and an ECDSA-SHA256 signature over that time. With a key list (``--auth-list-public-keys``)
only listed keys may call; without one any well-signed call is accepted and the key is the
node's identity ("automatic node authentication"). The key is bound to the node that
CreateNode made (in the same step that creates the node), and every later call must name
that node.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any, TypeVar

from superlink_async.services.errors import ServiceError, Status
from superlink_async.services.signatures import InlineSignatures, SignatureChecker
from superlink_async.state.base import LinkState

PUBLIC_KEY_HEADER = "flwr-public-key-bin"
TIMESTAMP_HEADER = "flwr-timestamp"
SIGNATURE_HEADER = "flwr-signature-bin"

#: A timestamp may be this far ahead of our clock (seconds)...
MAX_CLOCK_AHEAD = 5.0
#: ...and this old: the reference's 10 s tolerance plus 5 s of clock skew.
MAX_AGE = 15.0

ResponseT = TypeVar("ResponseT")


def _replies_are_its_own(request: Any) -> bool:
    """Whether every reply the request carries comes from the node the request names.

    The reference checked ``request.node`` only, so a node could push replies in another's
    name; a 1.18 SuperNode's replies always come from its own node.
    """
    node_id = request.node.node_id
    return all(
        message.metadata.src_node_id == node_id for message in getattr(request, "messages_list", ())
    )


class StaleTimestampError(ServiceError):
    """A call signed longer ago than the window allows, judged when it arrived."""


def _unauthenticated(message: str) -> ServiceError:
    return ServiceError(Status.UNAUTHENTICATED, message)


class NodeAuthenticator:
    """Checks the signed metadata of Fleet calls and binds keys to nodes."""

    def __init__(
        self,
        state: LinkState,
        known_keys: Collection[bytes] | None = None,
        clock: Callable[[], float] = time.time,
        signatures: SignatureChecker | None = None,
    ) -> None:
        self._state = state
        self._known = None if known_keys is None else frozenset(known_keys)
        self._clock = clock
        self._signatures = signatures or InlineSignatures()

    async def call(
        self,
        method: str,
        metadata: Mapping[str, Any],
        request: Any,
        handler: Callable[..., Awaitable[ResponseT]],
        arrived_at: float | None = None,
    ) -> ResponseT:
        """Authenticate one Fleet call and run it; CreateNode gets the key to bind.

        ``arrived_at`` (from :meth:`now`) is when the call reached us; its timestamp's age
        is measured then (see :meth:`verify`).
        """
        public_key = await self.verify(metadata, arrived_at)
        if method == "CreateNode":
            return await handler(request, public_key)
        if not _replies_are_its_own(request) or not await self._state.is_key_bound(
            public_key, request.node.node_id
        ):
            raise _unauthenticated("Invalid node ID")
        return await handler(request)

    async def is_idle_poll(self, metadata: Mapping[str, Any], node_id: int) -> bool:
        """Whether a poll names the node its key is bound to, and nothing waits for it.

        No signature is checked: the answer to such a poll ("nothing waiting") tells a
        caller only that nothing waits for that node, and skipping the check spares about
        half of an idle poll's cost. A poll with an instruction waiting is always verified
        before anything is handed out.
        """
        public_key = metadata.get(PUBLIC_KEY_HEADER)
        if not isinstance(public_key, bytes):
            return False
        if self._known is not None and public_key not in self._known:
            return False
        return await self._state.is_idle_node(public_key, node_id)

    def now(self) -> float:
        """The time on the authenticator's clock: stamp a call's arrival with it."""
        return self._clock()

    async def verify(self, metadata: Mapping[str, Any], arrived_at: float | None = None) -> bytes:
        """The caller's PEM key if its metadata is complete, known, signed and fresh.

        Fresh means within (-5 s, +15 s) of when the call arrived (``arrived_at``; default:
        now). A call that waited in our own queues (a saturated loop, a busy state store)
        for longer than the window would otherwise be refused UNAUTHENTICATED, which ends a
        1.18 SuperNode: the server's slowness must not cost the node its life. A replayed
        call still arrives late and is refused (``StaleTimestampError``).
        """
        public_key = metadata.get(PUBLIC_KEY_HEADER)
        timestamp = metadata.get(TIMESTAMP_HEADER)
        signature = metadata.get(SIGNATURE_HEADER)
        if not (
            isinstance(public_key, bytes)
            and isinstance(timestamp, str)
            and isinstance(signature, bytes)
        ):
            raise _unauthenticated("Missing authentication metadata")
        if self._known is not None and public_key not in self._known:
            raise _unauthenticated("Public key not recognized")
        try:
            signed = timestamp.encode("ascii")
        except UnicodeEncodeError as exc:
            raise _unauthenticated("Invalid signature") from exc
        if not await self._signatures.is_signed_by(public_key, signed, signature):
            raise _unauthenticated("Invalid signature")
        age = _age(timestamp, self._clock() if arrived_at is None else arrived_at)
        if age is None or age <= -MAX_CLOCK_AHEAD:
            raise _unauthenticated("Invalid timestamp")
        if age >= MAX_AGE:
            raise StaleTimestampError(Status.UNAUTHENTICATED, "Invalid timestamp")
        return public_key


def _age(timestamp: str, arrived_at: float) -> float | None:
    """Seconds from ``timestamp`` to ``arrived_at``; None for a malformed or naive time."""
    try:
        sent = datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    if sent.tzinfo is None:
        return None
    return arrived_at - sent.timestamp()
