from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Reading(_message.Message):
    __slots__ = ("sensor", "at", "celsius")
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CELSIUS_FIELD_NUMBER: _ClassVar[int]
    sensor: str
    at: str
    celsius: float
    def __init__(self, sensor: _Optional[str] = ..., at: _Optional[str] = ..., celsius: _Optional[float] = ...) -> None: ...

class ReadingBatch(_message.Message):
    __slots__ = ("batch_id", "readings")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    READINGS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    readings: _containers.RepeatedCompositeFieldContainer[Reading]
    def __init__(self, batch_id: _Optional[str] = ..., readings: _Optional[_Iterable[_Union[Reading, _Mapping]]] = ...) -> None: ...

class SensorRequest(_message.Message):
    __slots__ = ("readings",)
    READINGS_FIELD_NUMBER: _ClassVar[int]
    readings: ReadingBatch
    def __init__(self, readings: _Optional[_Union[ReadingBatch, _Mapping]] = ...) -> None: ...

class Rejected(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReadingReply(_message.Message):
    __slots__ = ("success", "message", "batch_id", "items_received", "items_processed", "items_rejected", "rejections", "processing_duration_seconds")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    batch_id: str
    items_received: int
    items_processed: int
    items_rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejected]
    processing_duration_seconds: float
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., batch_id: _Optional[str] = ..., items_received: _Optional[int] = ..., items_processed: _Optional[int] = ..., items_rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejected, _Mapping]]] = ..., processing_duration_seconds: _Optional[float] = ...) -> None: ...
