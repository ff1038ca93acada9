"""Request parsing and response shapes of the llm-inference backend: pure functions.

Three request forms, all validated here into one `Job`:
- the seed's `POST /`: {"prompt": str, "max_tokens"?: int, ...}; the prompt is sent as
  one user message in the chat template (an instruct model answers a bare prompt badly);
- OpenAI chat completions: {"messages": [{"role", "content"}], ...};
- OpenAI (legacy) completions: {"prompt": str, ...}, continued as raw text.

Options as OpenAI names them: max_tokens (max_completion_tokens too), temperature,
top_p, stop, n (1 only), stream, stream_options.include_usage; a null is the same as
leaving the field out. `model` is the app's to check (http.check_model); other fields
(user, seed, penalties...) are ignored, as OpenAI-compatible servers commonly do. A 400
names the offending field as its `param`.
Responses and stream chunks follow OpenAI's objects; `sse()` frames one server-sent event.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from services.backends.http import ApiError
from services.backends.llm.engine import Completion, Sampling

DEFAULT_MAX_TOKENS_LIMIT = 512
# OpenAI's documented default for /v1/completions is 16; chat and the seed's form get
# room for a short answer.
DEFAULT_MAX_TOKENS = {"simple": 256, "chat": 256, "completion": 16}
_ROLES = ("system", "user", "assistant")
_MAX_STOPS = 4
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Job:
    """One validated generation request."""

    kind: str  # "simple" | "chat" | "completion"
    sampling: Sampling
    prompt: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)  # the clock of its time to first token


def parse(kind: str, body: dict[str, Any], max_tokens_limit: int) -> Job:
    """Validate a request body of form `kind`; a 400 `ApiError` names the first problem."""
    body = {key: value for key, value in body.items() if value is not None}  # OpenAI: null = unset
    if kind == "chat":
        source: dict[str, Any] = {"messages": _messages(body.get("messages"))}
    else:
        source = {"prompt": _prompt(body.get("prompt"))}
    if body.get("n", 1) != 1:
        raise ApiError(400, "invalid_request", "n must be 1: one choice per request", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) or (stream and kind == "simple"):
        raise ApiError(400, "invalid_request", "stream must be a boolean (and is for the /v1 APIs)", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "invalid_request", "stream_options must be an object", "stream_options")
    return Job(kind=kind, sampling=_sampling(kind, body, max_tokens_limit), stream=stream,
               include_usage=options.get("include_usage") is True, **source)


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "invalid_request", "messages must be a non-empty list", "messages")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ApiError(400, "invalid_request",
                           f"messages[{i}] must be an object with role one of {', '.join(_ROLES)}",
                           "messages")
        messages.append({"role": message["role"], "content": _content(message.get("content"), i)})
    return messages


def _content(content: Any, i: int) -> str:
    """Message content: a string, or OpenAI's list of parts of which only text is read."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    raise ApiError(400, "invalid_request", f"messages[{i}].content must be text (this model reads no images)",
                   "messages")


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:  # OpenAI allows a batch; one is fine
        value = value[0]
    if not isinstance(value, str) or not value:
        raise ApiError(400, "invalid_request", "prompt must be a non-empty string", "prompt")
    return value


def _sampling(kind: str, body: dict[str, Any], limit: int) -> Sampling:
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", DEFAULT_MAX_TOKENS[kind]))
    if not _is_int(max_tokens) or not 1 <= max_tokens <= limit:
        raise ApiError(400, "invalid_max_tokens", f"max_tokens must be an integer from 1 to {limit}",
                       "max_tokens")
    temperature = body.get("temperature", Sampling.temperature)
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        raise ApiError(400, "invalid_request", "temperature must be a number from 0 to 2", "temperature")
    top_p = body.get("top_p", Sampling.top_p)
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise ApiError(400, "invalid_request", "top_p must be a number above 0, at most 1", "top_p")
    return Sampling(max_tokens, float(temperature), float(top_p), _stops(body.get("stop")))


def _stops(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else [] if value is None else value
    if (not isinstance(stops, list) or len(stops) > _MAX_STOPS
            or not all(isinstance(s, str) and s for s in stops)):
        raise ApiError(400, "invalid_request", f"stop must be a string or a list of at most {_MAX_STOPS}",
                       "stop")
    return tuple(stops)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def usage(done: Completion) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def response(job: Job, model: str, done: Completion) -> dict[str, Any]:
    """The whole answer to a request that did not stream."""
    if job.kind == "simple":
        return {"text": done.text, "usage": usage(done), "model": model, "finish_reason": done.finish_reason}
    if job.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": done.text}}
    else:
        choice = {"index": 0, "text": done.text}
    choice.update(finish_reason=done.finish_reason, logprobs=None)
    return {**_head(job, model), "choices": [choice], "usage": usage(done)}


def chunk(job: Job, model: str, text: str | None = None, finish_reason: str | None = None,
          role: bool = False) -> dict[str, Any]:
    """One streamed chunk: a piece of text, the opening role (chat), or the finish."""
    if job.kind == "chat":
        delta: dict[str, str] = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta}
    else:
        choice = {"index": 0, "text": text or ""}
    choice.update(finish_reason=finish_reason, logprobs=None)
    return {**_head(job, model, chunk=True), "choices": [choice]}


def usage_chunk(job: Job, model: str, done: Completion) -> dict[str, Any]:
    """The last chunk when stream_options.include_usage asks for it: no choices, usage."""
    return {**_head(job, model, chunk=True), "choices": [], "usage": usage(done)}


def _head(job: Job, model: str, chunk: bool = False) -> dict[str, Any]:
    if job.kind == "chat":
        prefix, kind = "chatcmpl", "chat.completion.chunk" if chunk else "chat.completion"
    else:
        prefix, kind = "cmpl", "text_completion"
    return {"id": f"{prefix}-{job.id}", "object": kind, "created": job.created, "model": model}


def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object (the WHATWG "data:" field)."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
