from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("enabled", "overlay_ip", "reason", "cert_expires_unix", "lighthouse_reachable", "tunnels_up", "network", "ca_fingerprint", "cert_name", "lighthouses", "am_lighthouse", "am_authority", "record_serial", "blocked_certs", "revoked")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_IP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    LIGHTHOUSE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_UP_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CERT_NAME_FIELD_NUMBER: _ClassVar[int]
    LIGHTHOUSES_FIELD_NUMBER: _ClassVar[int]
    AM_LIGHTHOUSE_FIELD_NUMBER: _ClassVar[int]
    AM_AUTHORITY_FIELD_NUMBER: _ClassVar[int]
    RECORD_SERIAL_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_CERTS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    overlay_ip: str
    reason: str
    cert_expires_unix: int
    lighthouse_reachable: bool
    tunnels_up: int
    network: str
    ca_fingerprint: str
    cert_name: str
    lighthouses: _containers.RepeatedScalarFieldContainer[str]
    am_lighthouse: bool
    am_authority: bool
    record_serial: int
    blocked_certs: int
    revoked: bool
    def __init__(self, enabled: _Optional[bool] = ..., overlay_ip: _Optional[str] = ..., reason: _Optional[str] = ..., cert_expires_unix: _Optional[int] = ..., lighthouse_reachable: _Optional[bool] = ..., tunnels_up: _Optional[int] = ..., network: _Optional[str] = ..., ca_fingerprint: _Optional[str] = ..., cert_name: _Optional[str] = ..., lighthouses: _Optional[_Iterable[str]] = ..., am_lighthouse: _Optional[bool] = ..., am_authority: _Optional[bool] = ..., record_serial: _Optional[int] = ..., blocked_certs: _Optional[int] = ..., revoked: _Optional[bool] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("nebula_action", "status")
    NEBULA_ACTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    nebula_action: str
    status: StatusResponse
    def __init__(self, nebula_action: _Optional[str] = ..., status: _Optional[_Union[StatusResponse, _Mapping]] = ...) -> None: ...
