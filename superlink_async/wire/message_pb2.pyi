from superlink_async.wire import error_pb2 as _error_pb2
from superlink_async.wire import recorddict_pb2 as _recorddict_pb2
from superlink_async.wire import transport_pb2 as _transport_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("metadata", "content", "error")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    metadata: Metadata
    content: _recorddict_pb2.RecordDict
    error: _error_pb2.Error
    def __init__(self, metadata: _Optional[_Union[Metadata, _Mapping]] = ..., content: _Optional[_Union[_recorddict_pb2.RecordDict, _Mapping]] = ..., error: _Optional[_Union[_error_pb2.Error, _Mapping]] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("run_id", "node_id", "node_config", "state", "run_config")
    class NodeConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _transport_pb2.Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_transport_pb2.Scalar, _Mapping]] = ...) -> None: ...
    class RunConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _transport_pb2.Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_transport_pb2.Scalar, _Mapping]] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    node_id: int
    node_config: _containers.MessageMap[str, _transport_pb2.Scalar]
    state: _recorddict_pb2.RecordDict
    run_config: _containers.MessageMap[str, _transport_pb2.Scalar]
    def __init__(self, run_id: _Optional[int] = ..., node_id: _Optional[int] = ..., node_config: _Optional[_Mapping[str, _transport_pb2.Scalar]] = ..., state: _Optional[_Union[_recorddict_pb2.RecordDict, _Mapping]] = ..., run_config: _Optional[_Mapping[str, _transport_pb2.Scalar]] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("run_id", "message_id", "src_node_id", "dst_node_id", "reply_to_message_id", "group_id", "ttl", "message_type", "created_at")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SRC_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DST_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    message_id: str
    src_node_id: int
    dst_node_id: int
    reply_to_message_id: str
    group_id: str
    ttl: float
    message_type: str
    created_at: float
    def __init__(self, run_id: _Optional[int] = ..., message_id: _Optional[str] = ..., src_node_id: _Optional[int] = ..., dst_node_id: _Optional[int] = ..., reply_to_message_id: _Optional[str] = ..., group_id: _Optional[str] = ..., ttl: _Optional[float] = ..., message_type: _Optional[str] = ..., created_at: _Optional[float] = ...) -> None: ...
