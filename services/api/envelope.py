"""POST /service/{type} for a service this node hosts: the seed's envelope.

Envoy sends the envelope here (from its client and its peer listener) only for a local
service; every other request to a backend goes through Envoy. The backend's JSON answer
is wrapped as it came, without parsing it again.
"""

from __future__ import annotations

import functools
import json
import time

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from services.api.errors import ApiError, bad_request, body_too_large, unavailable
from services.api.node import ApiNode
from services.common.config import ServiceConfig
from services.common.upstream import base_url

CONNECT_TIMEOUT_S = 5.0


async def read_json_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes, checked to be JSON."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise body_too_large(limit)
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        json.loads(body)
    except (ValueError, RecursionError):  # nested deeper than Python's stack (issue 11, L1)
        raise bad_request("invalid_json", "the request body is not valid JSON") from None
    return body


async def post(node: ApiNode, service: ServiceConfig, body: bytes) -> tuple[int, str | None, bytes]:
    """POST the body to the backend's invoke path: (status, content type, answer)."""
    headers = {"content-type": "application/json", **service.auth_headers}
    timeout = aiohttp.ClientTimeout(total=service.timeout_s, connect=CONNECT_TIMEOUT_S)
    session = node.backends.session(service.upstream)
    try:
        async with session.post(base_url(service.upstream) + service.invoke_path, data=body,
                                headers=headers, timeout=timeout) as resp:
            return resp.status, resp.headers.get("content-type"), await resp.read()
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise unavailable("backend_unavailable", f"{service.name} backend is not accepting connections",
                          unserved=True) from None
    except TimeoutError:
        raise ApiError(504, "backend_timeout",
                       f"{service.name} backend did not answer within {service.timeout_s:g} s") from None
    except aiohttp.ClientError as err:
        raise ApiError(502, "bad_gateway", f"{service.name} backend broke off its answer: {err}") from None


def declares_json(content_type: str | None) -> bool:
    """application/json, or a +json type (RFC 6839), with or without parameters."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


@functools.cache
def envelope_head(worker_id: str, service: str) -> bytes:
    """The seed's envelope up to its data, which follows: the same for every answer."""
    head = json.dumps({"status": "success", "message": f"Processed by {worker_id}", "service": service,
                       "worker_id": worker_id}, separators=(",", ":"))
    return head[:-1].encode() + b',"data":'


def wrap(worker_id: str, service: str, status: int, content_type: str | None, answer: bytes) -> Response:
    """The backend's answer as the client gets it: an error passed through, JSON enveloped."""
    if status >= 400:
        return Response(answer, status_code=status, media_type=content_type or "application/octet-stream")
    data = answer.strip()
    if not declares_json(content_type) or not data:
        raise ApiError(502, "bad_gateway", f"{service} backend did not answer JSON")
    # The backend's JSON goes into the envelope as it came, trusted on its content type:
    # decoding it (to check it, or to re-encode it) cost 60 µs for one embedding and 1.9 ms
    # for a batch of 32, on every request.
    return Response(envelope_head(worker_id, service) + data + b"}", media_type="application/json")


async def envelope(node: ApiNode, request: Request, service: ServiceConfig) -> Response:
    """Serve one envelope request, and count it as a local request (a 5xx as failed)."""
    started = time.perf_counter()
    try:
        body = await read_json_body(request, node.cfg.max_body_bytes)
        response = wrap(node.cfg.worker_id, service.name, *await post(node, service, body))
    except ApiError as err:
        response = err.response()
    node.envelope.served += 1
    node.envelope.failed += response.status_code >= 500
    node.metrics.observe(service.name, response.status_code, time.perf_counter() - started)
    return response
