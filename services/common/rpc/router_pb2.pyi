from services.common.rpc import dht_pb2 as _dht_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_KIND_NONE: _ClassVar[RouteKind]
    ROUTE_KIND_LOCAL: _ClassVar[RouteKind]
    ROUTE_KIND_FORWARDED: _ClassVar[RouteKind]
ROUTE_KIND_NONE: RouteKind
ROUTE_KIND_LOCAL: RouteKind
ROUTE_KIND_FORWARDED: RouteKind

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "requests_per_minute", "tokens_per_minute", "models", "ttl_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    requests_per_minute: int
    tokens_per_minute: int
    models: _containers.RepeatedScalarFieldContainer[str]
    ttl_seconds: int
    def __init__(self, name: _Optional[str] = ..., requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class CreatedKey(_message.Message):
    __slots__ = ("key", "token")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    key: _dht_pb2.ApiKey
    token: str
    def __init__(self, key: _Optional[_Union[_dht_pb2.ApiKey, _Mapping]] = ..., token: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyList(_message.Message):
    __slots__ = ("keys", "usage")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_dht_pb2.ApiKey]
    usage: _containers.RepeatedCompositeFieldContainer[KeyUsage]
    def __init__(self, keys: _Optional[_Iterable[_Union[_dht_pb2.ApiKey, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[KeyUsage, _Mapping]]] = ...) -> None: ...

class KeyUsage(_message.Message):
    __slots__ = ("name", "requests", "errors", "prompt_tokens", "completion_tokens", "last_used_at", "minute_requests", "minute_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    MINUTE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MINUTE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    last_used_at: float
    minute_requests: int
    minute_tokens: int
    def __init__(self, name: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., last_used_at: _Optional[float] = ..., minute_requests: _Optional[int] = ..., minute_tokens: _Optional[int] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class MeshModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelProvider(_message.Message):
    __slots__ = ("worker_id", "service", "local", "load_percent")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    LOAD_PERCENT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    service: str
    local: bool
    load_percent: int
    def __init__(self, worker_id: _Optional[str] = ..., service: _Optional[str] = ..., local: _Optional[bool] = ..., load_percent: _Optional[int] = ...) -> None: ...

class MeshModel(_message.Message):
    __slots__ = ("id", "kind", "context_length", "providers", "aliases")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    context_length: int
    providers: _containers.RepeatedCompositeFieldContainer[ModelProvider]
    aliases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., context_length: _Optional[int] = ..., providers: _Optional[_Iterable[_Union[ModelProvider, _Mapping]]] = ..., aliases: _Optional[_Iterable[str]] = ...) -> None: ...

class MeshModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[MeshModel]
    def __init__(self, models: _Optional[_Iterable[_Union[MeshModel, _Mapping]]] = ...) -> None: ...

class ResolveModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelResolution(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class GatewayRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GatewayStatus(_message.Message):
    __slots__ = ("connected", "version", "acked_version", "last_nack")
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_NACK_FIELD_NUMBER: _ClassVar[int]
    connected: bool
    version: int
    acked_version: int
    last_nack: str
    def __init__(self, connected: _Optional[bool] = ..., version: _Optional[int] = ..., acked_version: _Optional[int] = ..., last_nack: _Optional[str] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("withdrawn",)
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    withdrawn: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, withdrawn: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("service", "client")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    service: str
    client: str
    def __init__(self, service: _Optional[str] = ..., client: _Optional[str] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("service", "kind", "healthy")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    service: str
    kind: RouteKind
    healthy: bool
    def __init__(self, service: _Optional[str] = ..., kind: _Optional[_Union[RouteKind, str]] = ..., healthy: _Optional[bool] = ...) -> None: ...

class ListLocalServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocalService(_message.Message):
    __slots__ = ("name", "upstream", "health_path", "healthy", "last_error", "model", "load_seconds", "rss_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    HEALTH_PATH_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    upstream: str
    health_path: str
    healthy: bool
    last_error: str
    model: str
    load_seconds: float
    rss_bytes: int
    def __init__(self, name: _Optional[str] = ..., upstream: _Optional[str] = ..., health_path: _Optional[str] = ..., healthy: _Optional[bool] = ..., last_error: _Optional[str] = ..., model: _Optional[str] = ..., load_seconds: _Optional[float] = ..., rss_bytes: _Optional[int] = ...) -> None: ...

class ListLocalServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[LocalService]
    def __init__(self, services: _Optional[_Iterable[_Union[LocalService, _Mapping]]] = ...) -> None: ...

class RouterStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MeshServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProviderView(_message.Message):
    __slots__ = ("worker_id", "url", "local", "healthy", "record_age_seconds", "model", "gpu_model")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    RECORD_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    url: str
    local: bool
    healthy: bool
    record_age_seconds: float
    model: str
    gpu_model: str
    def __init__(self, worker_id: _Optional[str] = ..., url: _Optional[str] = ..., local: _Optional[bool] = ..., healthy: _Optional[bool] = ..., record_age_seconds: _Optional[float] = ..., model: _Optional[str] = ..., gpu_model: _Optional[str] = ...) -> None: ...

class ServiceView(_message.Message):
    __slots__ = ("name", "providers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    providers: _containers.RepeatedCompositeFieldContainer[ProviderView]
    def __init__(self, name: _Optional[str] = ..., providers: _Optional[_Iterable[_Union[ProviderView, _Mapping]]] = ...) -> None: ...

class MeshServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[ServiceView]
    def __init__(self, services: _Optional[_Iterable[_Union[ServiceView, _Mapping]]] = ...) -> None: ...

class RouterCounters(_message.Message):
    __slots__ = ("cache_misses", "dht_lookups", "misses_found", "cache_size")
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    DHT_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FOUND_FIELD_NUMBER: _ClassVar[int]
    CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    cache_misses: int
    dht_lookups: int
    misses_found: int
    cache_size: int
    def __init__(self, cache_misses: _Optional[int] = ..., dht_lookups: _Optional[int] = ..., misses_found: _Optional[int] = ..., cache_size: _Optional[int] = ...) -> None: ...
