from superlink_async.wire import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PushLogsRequest(_message.Message):
    __slots__ = ("node", "run_id", "logs")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    run_id: int
    logs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., run_id: _Optional[int] = ..., logs: _Optional[_Iterable[str]] = ...) -> None: ...

class PushLogsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
