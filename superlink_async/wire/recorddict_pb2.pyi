from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DoubleList(_message.Message):
    __slots__ = ("vals",)
    VALS_FIELD_NUMBER: _ClassVar[int]
    vals: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, vals: _Optional[_Iterable[float]] = ...) -> None: ...

class SintList(_message.Message):
    __slots__ = ("vals",)
    VALS_FIELD_NUMBER: _ClassVar[int]
    vals: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, vals: _Optional[_Iterable[int]] = ...) -> None: ...

class UintList(_message.Message):
    __slots__ = ("vals",)
    VALS_FIELD_NUMBER: _ClassVar[int]
    vals: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, vals: _Optional[_Iterable[int]] = ...) -> None: ...

class BoolList(_message.Message):
    __slots__ = ("vals",)
    VALS_FIELD_NUMBER: _ClassVar[int]
    vals: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, vals: _Optional[_Iterable[bool]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("vals",)
    VALS_FIELD_NUMBER: _ClassVar[int]
    vals: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vals: _Optional[_Iterable[str]] = ...) -> None: ...

class BytesList(_message.Message):
    __slots__ = ("vals",)
    VALS_FIELD_NUMBER: _ClassVar[int]
    vals: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, vals: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Array(_message.Message):
    __slots__ = ("dtype", "shape", "stype", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    STYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    stype: str
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., stype: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class MetricRecordValue(_message.Message):
    __slots__ = ("double", "sint64", "uint64", "double_list", "sint_list", "uint_list")
    DOUBLE_FIELD_NUMBER: _ClassVar[int]
    SINT64_FIELD_NUMBER: _ClassVar[int]
    UINT64_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_LIST_FIELD_NUMBER: _ClassVar[int]
    SINT_LIST_FIELD_NUMBER: _ClassVar[int]
    UINT_LIST_FIELD_NUMBER: _ClassVar[int]
    double: float
    sint64: int
    uint64: int
    double_list: DoubleList
    sint_list: SintList
    uint_list: UintList
    def __init__(self, double: _Optional[float] = ..., sint64: _Optional[int] = ..., uint64: _Optional[int] = ..., double_list: _Optional[_Union[DoubleList, _Mapping]] = ..., sint_list: _Optional[_Union[SintList, _Mapping]] = ..., uint_list: _Optional[_Union[UintList, _Mapping]] = ...) -> None: ...

class ConfigRecordValue(_message.Message):
    __slots__ = ("double", "sint64", "uint64", "bool", "string", "bytes", "double_list", "sint_list", "uint_list", "bool_list", "string_list", "bytes_list")
    DOUBLE_FIELD_NUMBER: _ClassVar[int]
    SINT64_FIELD_NUMBER: _ClassVar[int]
    UINT64_FIELD_NUMBER: _ClassVar[int]
    BOOL_FIELD_NUMBER: _ClassVar[int]
    STRING_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_LIST_FIELD_NUMBER: _ClassVar[int]
    SINT_LIST_FIELD_NUMBER: _ClassVar[int]
    UINT_LIST_FIELD_NUMBER: _ClassVar[int]
    BOOL_LIST_FIELD_NUMBER: _ClassVar[int]
    STRING_LIST_FIELD_NUMBER: _ClassVar[int]
    BYTES_LIST_FIELD_NUMBER: _ClassVar[int]
    double: float
    sint64: int
    uint64: int
    bool: bool
    string: str
    bytes: bytes
    double_list: DoubleList
    sint_list: SintList
    uint_list: UintList
    bool_list: BoolList
    string_list: StringList
    bytes_list: BytesList
    def __init__(self, double: _Optional[float] = ..., sint64: _Optional[int] = ..., uint64: _Optional[int] = ..., bool: bool = ..., string: _Optional[str] = ..., bytes: _Optional[bytes] = ..., double_list: _Optional[_Union[DoubleList, _Mapping]] = ..., sint_list: _Optional[_Union[SintList, _Mapping]] = ..., uint_list: _Optional[_Union[UintList, _Mapping]] = ..., bool_list: _Optional[_Union[BoolList, _Mapping]] = ..., string_list: _Optional[_Union[StringList, _Mapping]] = ..., bytes_list: _Optional[_Union[BytesList, _Mapping]] = ...) -> None: ...

class ArrayRecord(_message.Message):
    __slots__ = ("data_keys", "data_values")
    DATA_KEYS_FIELD_NUMBER: _ClassVar[int]
    DATA_VALUES_FIELD_NUMBER: _ClassVar[int]
    data_keys: _containers.RepeatedScalarFieldContainer[str]
    data_values: _containers.RepeatedCompositeFieldContainer[Array]
    def __init__(self, data_keys: _Optional[_Iterable[str]] = ..., data_values: _Optional[_Iterable[_Union[Array, _Mapping]]] = ...) -> None: ...

class MetricRecord(_message.Message):
    __slots__ = ("data",)
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricRecordValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricRecordValue, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.MessageMap[str, MetricRecordValue]
    def __init__(self, data: _Optional[_Mapping[str, MetricRecordValue]] = ...) -> None: ...

class ConfigRecord(_message.Message):
    __slots__ = ("data",)
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConfigRecordValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConfigRecordValue, _Mapping]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.MessageMap[str, ConfigRecordValue]
    def __init__(self, data: _Optional[_Mapping[str, ConfigRecordValue]] = ...) -> None: ...

class RecordDict(_message.Message):
    __slots__ = ("arrays", "metrics", "configs")
    class ArraysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ArrayRecord
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ArrayRecord, _Mapping]] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricRecord
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricRecord, _Mapping]] = ...) -> None: ...
    class ConfigsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConfigRecord
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConfigRecord, _Mapping]] = ...) -> None: ...
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    arrays: _containers.MessageMap[str, ArrayRecord]
    metrics: _containers.MessageMap[str, MetricRecord]
    configs: _containers.MessageMap[str, ConfigRecord]
    def __init__(self, arrays: _Optional[_Mapping[str, ArrayRecord]] = ..., metrics: _Optional[_Mapping[str, MetricRecord]] = ..., configs: _Optional[_Mapping[str, ConfigRecord]] = ...) -> None: ...
