from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("enabled", "overlay_ip", "reason", "cert_expires_unix", "lighthouse_reachable", "tunnels_up")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    OVERLAY_IP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CERT_EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    LIGHTHOUSE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_UP_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    overlay_ip: str
    reason: str
    cert_expires_unix: int
    lighthouse_reachable: bool
    tunnels_up: int
    def __init__(self, enabled: _Optional[bool] = ..., overlay_ip: _Optional[str] = ..., reason: _Optional[str] = ..., cert_expires_unix: _Optional[int] = ..., lighthouse_reachable: _Optional[bool] = ..., tunnels_up: _Optional[int] = ...) -> None: ...
