"""SimulationIo API behaviour: what a ``flwr-simulation`` process calls.

Claiming a run, status updates, logs and outputs are the ServerAppIo behaviour
(:class:`~superlink_async.services.appio.AppIoService`); only the federation options, which
tell the Simulation Engine how many SuperNodes to simulate, are this API's own.
"""

from __future__ import annotations

from superlink_async.services.appio import AppIoService
from superlink_async.services.errors import ServiceError, Status
from superlink_async.wire import run_pb2, simulationio_pb2

#: The reference's text when a run has no federation options (an unknown run).
NO_FEDERATION_OPTIONS = "Expected federation options to be set, but none available."


class SimulationIoService(AppIoService):
    """The SimulationIo methods; the run lifecycle ones are :class:`AppIoService`'s."""

    async def pull_simulation_inputs(
        self, request: simulationio_pb2.PullSimulationInputsRequest
    ) -> simulationio_pb2.PullSimulationInputsResponse:
        """Start the oldest pending run; an empty response when none is pending."""
        return await self.pull_inputs(simulationio_pb2.PullSimulationInputsResponse())

    async def push_simulation_outputs(
        self, request: simulationio_pb2.PushSimulationOutputsRequest
    ) -> simulationio_pb2.PushSimulationOutputsResponse:
        """Keep the simulation's final context, for a running run."""
        await self.store_outputs(request.run_id, request.context)
        return simulationio_pb2.PushSimulationOutputsResponse()

    async def get_federation_options(
        self, request: run_pb2.GetFederationOptionsRequest
    ) -> run_pb2.GetFederationOptionsResponse:
        """The options ``flwr run`` sent with the run (``num-supernodes``, ``backend``, ...).

        Any known run answers, whatever its status, as in the reference.
        """
        options = await self._state.get_federation_options(request.run_id)
        if options is None:
            raise ServiceError(Status.FAILED_PRECONDITION, NO_FEDERATION_OPTIONS)
        return run_pb2.GetFederationOptionsResponse(federation_options=options)
