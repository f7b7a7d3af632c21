import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Client(_message.Message):
    __slots__ = ("id", "name", "cpf", "birth_date", "address")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CPF_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    cpf: str
    birth_date: str
    address: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., cpf: _Optional[str] = ..., birth_date: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("id", "client_id", "date", "amount", "currency", "description", "category")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    id: int
    client_id: int
    date: str
    amount: float
    currency: str
    description: str
    category: str
    def __init__(self, id: _Optional[int] = ..., client_id: _Optional[int] = ..., date: _Optional[str] = ..., amount: _Optional[float] = ..., currency: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class Score(_message.Message):
    __slots__ = ("cpf", "score", "monthly_income", "credit_limit", "updated_at")
    CPF_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_INCOME_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    cpf: str
    score: int
    monthly_income: float
    credit_limit: float
    updated_at: str
    def __init__(self, cpf: _Optional[str] = ..., score: _Optional[int] = ..., monthly_income: _Optional[float] = ..., credit_limit: _Optional[float] = ..., updated_at: _Optional[str] = ...) -> None: ...

class ClientBatch(_message.Message):
    __slots__ = ("batch_id", "emitted_at", "clients")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    emitted_at: _timestamp_pb2.Timestamp
    clients: _containers.RepeatedCompositeFieldContainer[Client]
    def __init__(self, batch_id: _Optional[str] = ..., emitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., clients: _Optional[_Iterable[_Union[Client, _Mapping]]] = ...) -> None: ...

class TransactionBatch(_message.Message):
    __slots__ = ("batch_id", "emitted_at", "transactions")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    emitted_at: _timestamp_pb2.Timestamp
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    def __init__(self, batch_id: _Optional[str] = ..., emitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ...) -> None: ...

class ScoreBatch(_message.Message):
    __slots__ = ("batch_id", "emitted_at", "scores")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    emitted_at: _timestamp_pb2.Timestamp
    scores: _containers.RepeatedCompositeFieldContainer[Score]
    def __init__(self, batch_id: _Optional[str] = ..., emitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scores: _Optional[_Iterable[_Union[Score, _Mapping]]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("clients", "transactions", "scores")
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    clients: ClientBatch
    transactions: TransactionBatch
    scores: ScoreBatch
    def __init__(self, clients: _Optional[_Union[ClientBatch, _Mapping]] = ..., transactions: _Optional[_Union[TransactionBatch, _Mapping]] = ..., scores: _Optional[_Union[ScoreBatch, _Mapping]] = ...) -> None: ...

class ItemRejection(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
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
    rejections: _containers.RepeatedCompositeFieldContainer[ItemRejection]
    processing_duration_seconds: float
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., batch_id: _Optional[str] = ..., items_received: _Optional[int] = ..., items_processed: _Optional[int] = ..., items_rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[ItemRejection, _Mapping]]] = ..., processing_duration_seconds: _Optional[float] = ...) -> None: ...
