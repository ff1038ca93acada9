"""The error shapes of the HTTP API: ours, {"error": {"code", "message"}}, and on /v1 OpenAI's,
{"error": {"message", "type", "param", "code"}}, with the right status."""

from __future__ import annotations

from starlette.responses import JSONResponse

from services.common import errors

# Says that no backend saw the request, so the forwarding node may try another provider
# even for a service that is not idempotent (Envoy retries on it: retriable_headers).
UNSERVED = "x-mesh-unserved"


class ApiError(Exception):
    """A condition we can name; becomes its HTTP status, never a 500."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None,
                 unserved: bool = False):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.unserved = unserved

    def response(self) -> JSONResponse:
        return JSONResponse(errors.ours(self.code, self.message), status_code=self.status, headers=self.headers())

    def openai_response(self, param: str | None = None) -> JSONResponse:
        return JSONResponse(errors.openai(self.status, self.code, self.message, param),
                            status_code=self.status, headers=self.headers())

    def headers(self) -> dict[str, str]:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        if self.unserved:
            headers[UNSERVED] = "1"
        return headers


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def no_such_service(service: str) -> ApiError:
    return ApiError(404, "no_such_service", f"no node of the mesh hosts service {service!r}")


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")


def too_many_lookups() -> ApiError:
    """429: this client asked for too many names no cache holds, each a DHT lookup. The
    router gives a client a new lookup at least every second (LOOKUPS_PER_CLIENT_PER_S)."""
    return ApiError(429, "too_many_lookups", "too many requests for services this node has not seen; "
                    "retry later", retry_after=1)


def unavailable(code: str, message: str, unserved: bool = False) -> ApiError:
    """503 with Retry-After: the condition is expected to pass within a second or so."""
    return ApiError(503, code, message, retry_after=1, unserved=unserved)
