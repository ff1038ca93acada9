"""The two error shapes clients read, made in one place for the backends, the api and the
answers Envoy makes itself. Pure.

Ours, {"error": {"code", "message"}}, is what the seed's callers and the api's envelope
read; OpenAI's, on /v1, is what OpenAI clients parse (the official ones read `type`,
`code` and `param`).
"""

from __future__ import annotations

from typing import Any

OPENAI_PREFIX = "/v1"


def ours(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def openai(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def for_path(path: str, status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The error object for a request to `path`: OpenAI's under /v1, ours elsewhere."""
    if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
        return openai(status, code, message, param)
    return ours(code, message)
