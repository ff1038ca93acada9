"""Checks on the raw request path, before anything is routed or proxied.

The service name is checked as the client sent it (percent-encoding included), so an
encoded slash or dot can never smuggle a different name or path past the check; the
rest of the path is passed on exactly as sent, after refusing dot segments and control
characters so it cannot climb out of the backend's API.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from services.common.config import SERVICE_NAME
from services.gateway.errors import bad_request, body_too_large

PREFIX = b"/service/"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_service_path(raw_path: bytes) -> tuple[str, str]:
    """'/service/name/rest?…' raw bytes → (name, '/rest' still percent-encoded)."""
    rest = raw_path[len(PREFIX):].decode("latin-1")
    name, slash, sub = rest.partition("/")
    if not SERVICE_NAME.match(name):
        raise bad_request("bad_service_name",
                          "a service name is 1 to 63 characters of a-z, 0-9 and '-'")
    sub_path = slash + sub
    decoded = unquote(sub_path)
    if _CONTROL.search(decoded) or any(seg in (".", "..") for seg in decoded.split("/")):
        raise bad_request("bad_path", "the path after the service name has dot segments "
                                      "or control characters")
    return name, sub_path


def check_body_length(content_length: str | None, limit: int) -> int | None:
    if content_length is None:
        return None
    if not (content_length.isascii() and content_length.isdigit()):
        raise bad_request("bad_content_length", "Content-Length is not a number")
    if int(content_length) > limit:
        raise body_too_large(limit)
    return int(content_length)
