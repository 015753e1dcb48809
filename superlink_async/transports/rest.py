"""Fleet API over HTTP (``--fleet-api-type rest``): protobuf bodies, served by aiohttp.

Like the gRPC servicers, this module only converts: it finds the route, checks the
headers, parses the body and turns the service's answer or error into an HTTP response.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from superlink_async.services.errors import ServiceError, Status, state_failure
from superlink_async.services.fleet import FleetService
from superlink_async.state.base import StateError
from superlink_async.transports.fleet_calls import FLEET_CALLS
from superlink_async.transports.gate import CallGate, RefusedError
from superlink_async.wire import fab_pb2, fleet_pb2, run_pb2

PROTOBUF = "application/protobuf"
ROUTE_PREFIX = "/api/v0/fleet/"

HTTP_STATUS = {
    Status.INVALID_ARGUMENT: 400,
    Status.UNAUTHENTICATED: 401,
    Status.PERMISSION_DENIED: 403,
    Status.NOT_FOUND: 404,
    Status.FAILED_PRECONDITION: 409,
    Status.UNIMPLEMENTED: 501,
    Status.UNAVAILABLE: 503,
}

_SLASHES = re.compile(r"/{2,}")


#: ``/api/v0/fleet/<name>`` -> the request type it carries (its handler is in FLEET_CALLS).
ROUTES: dict[str, type[ProtoMessage]] = {
    "create-node": fleet_pb2.CreateNodeRequest,
    "delete-node": fleet_pb2.DeleteNodeRequest,
    "pull-messages": fleet_pb2.PullMessagesRequest,
    "push-messages": fleet_pb2.PushMessagesRequest,
    "ping": fleet_pb2.PingRequest,
    "get-run": run_pb2.GetRunRequest,
    "get-fab": fab_pb2.GetFabRequest,
}


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


def _header_error(request: web.Request) -> str | None:
    """The reference's header checks, in its order and with its texts."""
    for header in ("Content-Type", "Accept"):
        value = request.headers.get(header)
        if value is None:
            return f"Missing header `{header}`"
        if value != PROTOBUF:
            return f"Unsupported `{header}`"
    return None


def _route_for(request: web.Request) -> type[ProtoMessage] | web.Response:
    """The route a request is for, or the response that refuses it (404, 405, 400)."""
    # The 1.18.0 REST SuperNode asks for "//api/v0/fleet/pull-messages" (and three more):
    # duplicate slashes are merged so that those calls reach their route.
    path = _SLASHES.sub("/", request.path).rstrip("/")
    route = ROUTES.get(path.removeprefix(ROUTE_PREFIX)) if path.startswith(ROUTE_PREFIX) else None
    if route is None:
        return _text(404, "Not Found")
    if request.method != "POST":
        return _text(405, "Method Not Allowed")
    if error := _header_error(request):
        return _text(400, error)
    return route


def fleet_rest_app(
    service: FleetService, gate: CallGate, healthy: Callable[[], Awaitable[bool]] | None = None
) -> web.Application:
    """The Fleet REST application; one catch-all route so every path is answered here.

    Bodies over the gate's ``max_message_bytes`` are refused with 413 before being read.
    With ``healthy``, ``GET /health`` answers 200 SERVING or 503 NOT_SERVING.
    """

    async def dispatch(request: web.Request) -> web.StreamResponse:
        request_type = _route_for(request)
        if isinstance(request_type, web.Response):
            return request_type
        try:
            async with gate.admit("FleetRest", request_type.__name__.removesuffix("Request")):
                message = request_type.FromString(await request.read())
                response = await FLEET_CALLS[request_type](service, message)
        except DecodeError:
            return _text(400, f"Malformed {request_type.__name__}")
        except RefusedError as exc:
            return _text(503, str(exc))
        except ServiceError as exc:
            return _text(HTTP_STATUS[exc.status], exc.message)
        except StateError as exc:
            if (failure := state_failure(exc)) is None:
                raise
            return _text(HTTP_STATUS[failure.status], failure.message)
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)

    async def health(request: web.Request) -> web.StreamResponse:
        if healthy is not None and await healthy():
            return _text(200, "SERVING")
        return _text(503, "NOT_SERVING")

    app = web.Application(client_max_size=gate.max_message_bytes)
    if healthy is not None:
        app.router.add_get("/health", health)
    app.router.add_route("*", "/{path:.*}", dispatch)
    return app
