from superlink_async.wire import fab_pb2 as _fab_pb2
from superlink_async.wire import transport_pb2 as _transport_pb2
from superlink_async.wire import recorddict_pb2 as _recorddict_pb2
from superlink_async.wire import run_pb2 as _run_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRunRequest(_message.Message):
    __slots__ = ("fab", "override_config", "federation_options")
    class OverrideConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _transport_pb2.Scalar
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_transport_pb2.Scalar, _Mapping]] = ...) -> None: ...
    FAB_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_CONFIG_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    fab: _fab_pb2.Fab
    override_config: _containers.MessageMap[str, _transport_pb2.Scalar]
    federation_options: _recorddict_pb2.ConfigRecord
    def __init__(self, fab: _Optional[_Union[_fab_pb2.Fab, _Mapping]] = ..., override_config: _Optional[_Mapping[str, _transport_pb2.Scalar]] = ..., federation_options: _Optional[_Union[_recorddict_pb2.ConfigRecord, _Mapping]] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class StreamLogsRequest(_message.Message):
    __slots__ = ("run_id", "after_timestamp")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    after_timestamp: float
    def __init__(self, run_id: _Optional[int] = ..., after_timestamp: _Optional[float] = ...) -> None: ...

class StreamLogsResponse(_message.Message):
    __slots__ = ("log_output", "latest_timestamp")
    LOG_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LATEST_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    log_output: str
    latest_timestamp: float
    def __init__(self, log_output: _Optional[str] = ..., latest_timestamp: _Optional[float] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("run_dict", "now")
    class RunDictEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: _run_pb2.Run
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[_run_pb2.Run, _Mapping]] = ...) -> None: ...
    RUN_DICT_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    run_dict: _containers.MessageMap[int, _run_pb2.Run]
    now: str
    def __init__(self, run_dict: _Optional[_Mapping[int, _run_pb2.Run]] = ..., now: _Optional[str] = ...) -> None: ...

class GetLoginDetailsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLoginDetailsResponse(_message.Message):
    __slots__ = ("auth_type", "device_code", "verification_uri_complete", "expires_in", "interval")
    AUTH_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_URI_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    auth_type: str
    device_code: str
    verification_uri_complete: str
    expires_in: int
    interval: int
    def __init__(self, auth_type: _Optional[str] = ..., device_code: _Optional[str] = ..., verification_uri_complete: _Optional[str] = ..., expires_in: _Optional[int] = ..., interval: _Optional[int] = ...) -> None: ...

class GetAuthTokensRequest(_message.Message):
    __slots__ = ("device_code",)
    DEVICE_CODE_FIELD_NUMBER: _ClassVar[int]
    device_code: str
    def __init__(self, device_code: _Optional[str] = ...) -> None: ...

class GetAuthTokensResponse(_message.Message):
    __slots__ = ("access_token", "refresh_token")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    refresh_token: str
    def __init__(self, access_token: _Optional[str] = ..., refresh_token: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: int
    def __init__(self, run_id: _Optional[int] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("success",)
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    def __init__(self, success: bool = ...) -> None: ...
