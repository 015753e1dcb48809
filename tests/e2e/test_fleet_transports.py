"""End-to-end over every Fleet transport: REST, GrpcAdapter, and several at once.

The reference cannot pass the REST test: its 1.18.0 REST SuperNode asks for
``//api/v0/fleet/pull-messages`` and gets 404, so it never receives work. Serving several
transports from one process is ours alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.e2e.harness import COMPLETED, FederationFactory, FlowerApp, Timeouts

pytestmark = pytest.mark.e2e


def complete_a_run(
    make_federation: FederationFactory, flower_app: FlowerApp, fleet_api_types: Sequence[str]
) -> None:
    federation = make_federation(fleet_api_types=fleet_api_types)
    cli = federation.cli(flower_app)
    run_id = cli.run()
    assert cli.wait_for_status(run_id, COMPLETED, Timeouts.RUN_COMPLETES) == COMPLETED


@pytest.mark.reference_fails(reason="its REST Fleet API 404s the SuperNode's //api paths")
def test_two_rest_supernodes_complete_a_run(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """`flower-supernode --rest` x2 + `flwr run` reach finished:completed."""
    complete_a_run(make_federation, flower_app, ["rest"])


def test_two_grpc_adapter_supernodes_complete_a_run(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """`flower-supernode --grpc-adapter` x2 + `flwr run` reach finished:completed."""
    complete_a_run(make_federation, flower_app, ["grpc-adapter"])


@pytest.mark.reference_fails(reason="it serves one Fleet API type per process")
def test_grpc_and_rest_supernodes_share_one_run(
    make_federation: FederationFactory, flower_app: FlowerApp
) -> None:
    """One gRPC and one REST SuperNode train in the same run, served by one process."""
    complete_a_run(make_federation, flower_app, ["grpc-rere", "rest"])
