from superlink_async.wire import node_pb2 as _node_pb2
from superlink_async.wire import run_pb2 as _run_pb2
from superlink_async.wire import fab_pb2 as _fab_pb2
from superlink_async.wire import message_pb2 as _message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateNodeRequest(_message.Message):
    __slots__ = ("ping_interval",)
    PING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    ping_interval: float
    def __init__(self, ping_interval: _Optional[float] = ...) -> None: ...

class CreateNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class DeleteNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class DeleteNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("node", "ping_interval")
    NODE_FIELD_NUMBER: _ClassVar[int]
    PING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    ping_interval: float
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., ping_interval: _Optional[float] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: bool = ...) -> None: ...

class PullMessagesRequest(_message.Message):
    __slots__ = ("node", "message_ids")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PullMessagesResponse(_message.Message):
    __slots__ = ("reconnect", "messages_list")
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_LIST_FIELD_NUMBER: _ClassVar[int]
    reconnect: Reconnect
    messages_list: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, reconnect: _Optional[_Union[Reconnect, _Mapping]] = ..., messages_list: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...

class PushMessagesRequest(_message.Message):
    __slots__ = ("node", "messages_list")
    NODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_LIST_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    messages_list: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., messages_list: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...

class PushMessagesResponse(_message.Message):
    __slots__ = ("reconnect", "results")
    class ResultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    reconnect: Reconnect
    results: _containers.ScalarMap[str, int]
    def __init__(self, reconnect: _Optional[_Union[Reconnect, _Mapping]] = ..., results: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Reconnect(_message.Message):
    __slots__ = ("reconnect",)
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    reconnect: int
    def __init__(self, reconnect: _Optional[int] = ...) -> None: ...
