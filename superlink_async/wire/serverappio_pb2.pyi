from superlink_async.wire import log_pb2 as _log_pb2
from superlink_async.wire import node_pb2 as _node_pb2
from superlink_async.wire import message_pb2 as _message_pb2
from superlink_async.wire import run_pb2 as _run_pb2
from superlink_async.wire import fab_pb2 as _fab_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetNodesRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class GetNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_node_pb2.Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_node_pb2.Node, _Mapping]]] = ...) -> None: ...

class PushInsMessagesRequest(_message.Message):
    __slots__ = ("messages_list", "run_id")
    MESSAGES_LIST_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    messages_list: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    run_id: int
    def __init__(self, messages_list: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ..., run_id: _Optional[int] = ...) -> None: ...

class PushInsMessagesResponse(_message.Message):
    __slots__ = ("message_ids",)
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, message_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PullResMessagesRequest(_message.Message):
    __slots__ = ("message_ids", "run_id")
    MESSAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    message_ids: _containers.RepeatedScalarFieldContainer[str]
    run_id: int
    def __init__(self, message_ids: _Optional[_Iterable[str]] = ..., run_id: _Optional[int] = ...) -> None: ...

class PullResMessagesResponse(_message.Message):
    __slots__ = ("messages_list",)
    MESSAGES_LIST_FIELD_NUMBER: _ClassVar[int]
    messages_list: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    def __init__(self, messages_list: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ...) -> None: ...

class PullServerAppInputsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PullServerAppInputsResponse(_message.Message):
    __slots__ = ("context", "run", "fab")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    FAB_FIELD_NUMBER: _ClassVar[int]
    context: _message_pb2.Context
    run: _run_pb2.Run
    fab: _fab_pb2.Fab
    def __init__(self, context: _Optional[_Union[_message_pb2.Context, _Mapping]] = ..., run: _Optional[_Union[_run_pb2.Run, _Mapping]] = ..., fab: _Optional[_Union[_fab_pb2.Fab, _Mapping]] = ...) -> None: ...

class PushServerAppOutputsRequest(_message.Message):
    __slots__ = ("run_id", "context")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    context: _message_pb2.Context
    def __init__(self, run_id: _Optional[int] = ..., context: _Optional[_Union[_message_pb2.Context, _Mapping]] = ...) -> None: ...

class PushServerAppOutputsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
