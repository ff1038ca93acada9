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

class DrainRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("withdrawn",)
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    withdrawn: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, withdrawn: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("service", "kind", "upstream", "invoke_path", "healthy", "idempotent", "timeout_seconds", "worker_id", "endpoints")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    INVOKE_PATH_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    kind: RouteKind
    upstream: str
    invoke_path: str
    healthy: bool
    idempotent: bool
    timeout_seconds: float
    worker_id: str
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, service: _Optional[str] = ..., kind: _Optional[_Union[RouteKind, str]] = ..., upstream: _Optional[str] = ..., invoke_path: _Optional[str] = ..., healthy: _Optional[bool] = ..., idempotent: _Optional[bool] = ..., timeout_seconds: _Optional[float] = ..., worker_id: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("worker_id", "url", "expires_at")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    url: str
    expires_at: float
    def __init__(self, worker_id: _Optional[str] = ..., url: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class WatchRoutesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouteTable(_message.Message):
    __slots__ = ("version", "routes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, version: _Optional[int] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("service", "kind", "success", "worker_id", "latency_seconds", "from_table", "failed_workers")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FROM_TABLE_FIELD_NUMBER: _ClassVar[int]
    FAILED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    service: str
    kind: RouteKind
    success: bool
    worker_id: str
    latency_seconds: float
    from_table: bool
    failed_workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, service: _Optional[str] = ..., kind: _Optional[_Union[RouteKind, str]] = ..., success: _Optional[bool] = ..., worker_id: _Optional[str] = ..., latency_seconds: _Optional[float] = ..., from_table: _Optional[bool] = ..., failed_workers: _Optional[_Iterable[str]] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

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
    __slots__ = ("worker_id", "url", "local", "healthy", "record_age_seconds", "smoothed_latency_seconds", "model", "gpu_model")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    RECORD_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SMOOTHED_LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    url: str
    local: bool
    healthy: bool
    record_age_seconds: float
    smoothed_latency_seconds: float
    model: str
    gpu_model: str
    def __init__(self, worker_id: _Optional[str] = ..., url: _Optional[str] = ..., local: _Optional[bool] = ..., healthy: _Optional[bool] = ..., record_age_seconds: _Optional[float] = ..., smoothed_latency_seconds: _Optional[float] = ..., model: _Optional[str] = ..., gpu_model: _Optional[str] = ...) -> None: ...

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

class RoutingStats(_message.Message):
    __slots__ = ("local_requests", "forwarded_requests", "cache_hits", "cache_misses", "dht_lookups", "failed_requests", "cache_size", "cache_hit_rate")
    LOCAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_MISSES_FIELD_NUMBER: _ClassVar[int]
    DHT_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    FAILED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    local_requests: int
    forwarded_requests: int
    cache_hits: int
    cache_misses: int
    dht_lookups: int
    failed_requests: int
    cache_size: int
    cache_hit_rate: float
    def __init__(self, local_requests: _Optional[int] = ..., forwarded_requests: _Optional[int] = ..., cache_hits: _Optional[int] = ..., cache_misses: _Optional[int] = ..., dht_lookups: _Optional[int] = ..., failed_requests: _Optional[int] = ..., cache_size: _Optional[int] = ..., cache_hit_rate: _Optional[float] = ...) -> None: ...
