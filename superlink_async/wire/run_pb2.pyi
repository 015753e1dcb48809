from superlink_async.wire import fab_pb2 as _fab_pb2
from superlink_async.wire import node_pb2 as _node_pb2
from superlink_async.wire import recorddict_pb2 as _recorddict_pb2
from superlink_async.wire import transport_pb2 as _transport_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Run(_message.Message):
    __slots__ = ("run_id", "fab_id", "fab_version", "override_config", "fab_hash", "pending_at", "starting_at", "running_at", "finished_at", "status")
    class OverrideConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _transport_pb2.Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_transport_pb2.Scalar, _Mapping]] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FAB_ID_FIELD_NUMBER: _ClassVar[int]
    FAB_VERSION_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    FAB_HASH_FIELD_NUMBER: _ClassVar[int]
    PENDING_AT_FIELD_NUMBER: _ClassVar[int]
    STARTING_AT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    fab_id: str
    fab_version: str
    override_config: _containers.MessageMap[str, _transport_pb2.Scalar]
    fab_hash: str
    pending_at: str
    starting_at: str
    running_at: str
    finished_at: str
    status: RunStatus
    def __init__(self, run_id: _Optional[int] = ..., fab_id: _Optional[str] = ..., fab_version: _Optional[str] = ..., override_config: _Optional[_Mapping[str, _transport_pb2.Scalar]] = ..., fab_hash: _Optional[str] = ..., pending_at: _Optional[str] = ..., starting_at: _Optional[str] = ..., running_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., status: _Optional[_Union[RunStatus, _Mapping]] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("status", "sub_status", "details")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUB_STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    status: str
    sub_status: str
    details: str
    def __init__(self, status: _Optional[str] = ..., sub_status: _Optional[str] = ..., details: _Optional[str] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("fab_id", "fab_version", "override_config", "fab")
    class OverrideConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _transport_pb2.Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_transport_pb2.Scalar, _Mapping]] = ...) -> None: ...
    FAB_ID_FIELD_NUMBER: _ClassVar[int]
    FAB_VERSION_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    FAB_FIELD_NUMBER: _ClassVar[int]
    fab_id: str
    fab_version: str
    override_config: _containers.MessageMap[str, _transport_pb2.Scalar]
    fab: _fab_pb2.Fab
    def __init__(self, fab_id: _Optional[str] = ..., fab_version: _Optional[str] = ..., override_config: _Optional[_Mapping[str, _transport_pb2.Scalar]] = ..., fab: _Optional[_Union[_fab_pb2.Fab, _Mapping]] = ...) -> None: ...

class CreateRunResponse(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("node", "run_id")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    run_id: int
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., run_id: _Optional[int] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class UpdateRunStatusRequest(_message.Message):
    __slots__ = ("run_id", "run_status")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_STATUS_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    run_status: RunStatus
    def __init__(self, run_id: _Optional[int] = ..., run_status: _Optional[_Union[RunStatus, _Mapping]] = ...) -> None: ...

class UpdateRunStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRunStatusRequest(_message.Message):
    __slots__ = ("node", "run_ids")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    run_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., run_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetRunStatusResponse(_message.Message):
    __slots__ = ("run_status_dict",)
    class RunStatusDictEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: RunStatus
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[RunStatus, _Mapping]] = ...) -> None: ...
    RUN_STATUS_DICT_FIELD_NUMBER: _ClassVar[int]
    run_status_dict: _containers.MessageMap[int, RunStatus]
    def __init__(self, run_status_dict: _Optional[_Mapping[int, RunStatus]] = ...) -> None: ...

class GetFederationOptionsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class GetFederationOptionsResponse(_message.Message):
    __slots__ = ("federation_options",)
    FEDERATION_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    federation_options: _recorddict_pb2.ConfigRecord
    def __init__(self, federation_options: _Optional[_Union[_recorddict_pb2.ConfigRecord, _Mapping]] = ...) -> None: ...
