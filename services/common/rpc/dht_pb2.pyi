from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderRecord(_message.Message):
    __slots__ = ("service", "worker_id", "url", "issued_at", "expires_at", "sequence", "idempotent", "gpu_model", "gpu_free_bytes", "public_key", "model", "models", "keys", "usage")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    service: str
    worker_id: str
    url: str
    issued_at: float
    expires_at: float
    sequence: int
    idempotent: bool
    gpu_model: str
    gpu_free_bytes: int
    public_key: str
    model: str
    models: _containers.RepeatedCompositeFieldContainer[Model]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    usage: _containers.RepeatedCompositeFieldContainer[KeyWindow]
    def __init__(self, service: _Optional[str] = ..., worker_id: _Optional[str] = ..., url: _Optional[str] = ..., issued_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., sequence: _Optional[int] = ..., idempotent: _Optional[bool] = ..., gpu_model: _Optional[str] = ..., gpu_free_bytes: _Optional[int] = ..., public_key: _Optional[str] = ..., model: _Optional[str] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[KeyWindow, _Mapping]]] = ...) -> None: ...

class KeyWindow(_message.Message):
    __slots__ = ("key", "window", "requests", "tokens")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    key: str
    window: int
    requests: int
    tokens: int
    def __init__(self, key: _Optional[str] = ..., window: _Optional[int] = ..., requests: _Optional[int] = ..., tokens: _Optional[int] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "public_key", "requests_per_minute", "tokens_per_minute", "models", "expires_at", "revoked", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    public_key: str
    requests_per_minute: int
    tokens_per_minute: int
    models: _containers.RepeatedScalarFieldContainer[str]
    expires_at: int
    revoked: bool
    created_at: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., public_key: _Optional[str] = ..., requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., expires_at: _Optional[int] = ..., revoked: _Optional[bool] = ..., created_at: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "kind", "context_length", "service", "load_percent")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LOAD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    context_length: int
    service: str
    load_percent: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., context_length: _Optional[int] = ..., service: _Optional[str] = ..., load_percent: _Optional[int] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("service", "ttl_seconds", "idempotent", "model", "models", "keys", "usage", "gpu_model", "gpu_free_bytes", "url")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    service: str
    ttl_seconds: int
    idempotent: bool
    model: str
    models: _containers.RepeatedCompositeFieldContainer[Model]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    usage: _containers.RepeatedCompositeFieldContainer[KeyWindow]
    gpu_model: str
    gpu_free_bytes: int
    url: str
    def __init__(self, service: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., idempotent: _Optional[bool] = ..., model: _Optional[str] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[KeyWindow, _Mapping]]] = ..., gpu_model: _Optional[str] = ..., gpu_free_bytes: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class AnnounceResponse(_message.Message):
    __slots__ = ("record", "stored_on")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    STORED_ON_FIELD_NUMBER: _ClassVar[int]
    record: ProviderRecord
    stored_on: int
    def __init__(self, record: _Optional[_Union[ProviderRecord, _Mapping]] = ..., stored_on: _Optional[int] = ...) -> None: ...

class WithdrawRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class WithdrawResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: bool
    def __init__(self, removed: _Optional[bool] = ...) -> None: ...

class FindProvidersRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class FindProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderRecord]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderRecord, _Mapping]]] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Peer(_message.Message):
    __slots__ = ("node_id", "address", "rtt_seconds", "reachable")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RTT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    rtt_seconds: float
    reachable: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., rtt_seconds: _Optional[float] = ..., reachable: _Optional[bool] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, services: _Optional[_Iterable[str]] = ...) -> None: ...

class UnverifiedPeer(_message.Message):
    __slots__ = ("address", "worker_id", "records", "last_seen")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    address: str
    worker_id: str
    records: int
    last_seen: float
    def __init__(self, address: _Optional[str] = ..., worker_id: _Optional[str] = ..., records: _Optional[int] = ..., last_seen: _Optional[float] = ...) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers", "unverified")
    PEERS_FIELD_NUMBER: _ClassVar[int]
    UNVERIFIED_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    unverified: _containers.RepeatedCompositeFieldContainer[UnverifiedPeer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., unverified: _Optional[_Iterable[_Union[UnverifiedPeer, _Mapping]]] = ...) -> None: ...

class DhtStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DhtStatsResponse(_message.Message):
    __slots__ = ("known_peers", "stored_records", "announces", "lookups", "port", "node_id", "observed_address")
    KNOWN_PEERS_FIELD_NUMBER: _ClassVar[int]
    STORED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCES_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    known_peers: int
    stored_records: int
    announces: int
    lookups: int
    port: int
    node_id: str
    observed_address: str
    def __init__(self, known_peers: _Optional[int] = ..., stored_records: _Optional[int] = ..., announces: _Optional[int] = ..., lookups: _Optional[int] = ..., port: _Optional[int] = ..., node_id: _Optional[str] = ..., observed_address: _Optional[str] = ...) -> None: ...
