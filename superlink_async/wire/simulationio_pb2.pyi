from superlink_async.wire import log_pb2 as _log_pb2
from superlink_async.wire import message_pb2 as _message_pb2
from superlink_async.wire import run_pb2 as _run_pb2
from superlink_async.wire import fab_pb2 as _fab_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PullSimulationInputsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PullSimulationInputsResponse(_message.Message):
    __slots__ = ("context", "run", "fab")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    FAB_FIELD_NUMBER: _ClassVar[int]
    context: _message_pb2.Context
    run: _run_pb2.Run
    fab: _fab_pb2.Fab
    def __init__(self, context: _Optional[_Union[_message_pb2.Context, _Mapping]] = ..., run: _Optional[_Union[_run_pb2.Run, _Mapping]] = ..., fab: _Optional[_Union[_fab_pb2.Fab, _Mapping]] = ...) -> None: ...

class PushSimulationOutputsRequest(_message.Message):
    __slots__ = ("run_id", "context")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    context: _message_pb2.Context
    def __init__(self, run_id: _Optional[int] = ..., context: _Optional[_Union[_message_pb2.Context, _Mapping]] = ...) -> None: ...

class PushSimulationOutputsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
