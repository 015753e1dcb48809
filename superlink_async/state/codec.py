"""Conversions between wire messages and our records, shared by every service and backend."""

from __future__ import annotations

from collections.abc import Mapping

from superlink_async.state.base import RunRecord, RunStatus, ScalarValue, UserConfig
from superlink_async.wire import run_pb2
from superlink_async.wire.transport_pb2 import Scalar


def scalar_to_value(scalar: Scalar) -> ScalarValue:
    """The Python value a ``Scalar`` holds (an unset Scalar reads as 0.0, its default)."""
    kind = scalar.WhichOneof("scalar") or "double"
    value: ScalarValue = getattr(scalar, kind)
    return value


def value_to_scalar(value: ScalarValue) -> Scalar:
    """The ``Scalar`` flwr would build for ``value`` (ints as sint64, as flwr's serde does)."""
    if isinstance(value, bool):
        return Scalar(bool=value)
    if isinstance(value, int):
        return Scalar(sint64=value)
    if isinstance(value, float):
        return Scalar(double=value)
    if isinstance(value, str):
        return Scalar(string=value)
    return Scalar(bytes=value)


def user_config_from_proto(config: Mapping[str, Scalar]) -> UserConfig:
    """``map<string, Scalar>`` to a plain dict."""
    return {key: scalar_to_value(scalar) for key, scalar in config.items()}


def fill_user_config(target: Mapping[str, Scalar], config: UserConfig) -> None:
    """Write ``config`` into a protobuf ``map<string, Scalar>`` field."""
    for key, value in config.items():
        target[key].CopyFrom(value_to_scalar(value))


def run_status_to_proto(status: RunStatus) -> run_pb2.RunStatus:
    """Our run status as the wire's ``RunStatus``."""
    return run_pb2.RunStatus(
        status=status.status, sub_status=status.sub_status, details=status.details
    )


def run_status_from_proto(status: run_pb2.RunStatus) -> RunStatus:
    """The wire's ``RunStatus`` as ours."""
    return RunStatus(status.status, status.sub_status, status.details)


def run_to_proto(run: RunRecord) -> run_pb2.Run:
    """The full ``Run`` message (timestamps and status included)."""
    message = run_pb2.Run(
        run_id=run.run_id,
        fab_id=run.fab_id,
        fab_version=run.fab_version,
        fab_hash=run.fab_hash,
        pending_at=run.pending_at,
        starting_at=run.starting_at,
        running_at=run.running_at,
        finished_at=run.finished_at,
        status=run_status_to_proto(run.status),
    )
    fill_user_config(message.override_config, run.override_config)
    return message


def run_to_fleet_proto(run: RunRecord) -> run_pb2.Run:
    """The ``Run`` a SuperNode gets: identity and config only, as the reference sends."""
    message = run_pb2.Run(
        run_id=run.run_id, fab_id=run.fab_id, fab_version=run.fab_version, fab_hash=run.fab_hash
    )
    fill_user_config(message.override_config, run.override_config)
    return message
