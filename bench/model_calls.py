"""What the models scenario sends and how: the bodies (a rendered page of text, texts to
embed, a chat prompt), the routes to each backend (directly on its unix socket, through the
gateways, through a bare Envoy) and one timed call of each kind."""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import dataclass
from typing import Self

import aiohttp
from PIL import Image, ImageDraw, ImageFont

from bench.mesh import Mesh

EMBEDDINGS, OCR, LLM = "rag-embeddings", "vision-ocr", "llm-inference"
BUILTINS = (OCR, EMBEDDINGS, LLM)
REQUEST_TIMEOUT_S = 120
PROMPT = "Explain in two sentences what a service mesh does."
PAGE_TEXT = "the quick brown fox jumps over a lazy dog while meshworker routes every request to a model"


# --- what is sent --------------------------------------------------------------------------

def page_lines(count: int) -> list[str]:
    """`count` different lines of ordinary words, numbered."""
    words = PAGE_TEXT.split()
    return [" ".join(words[(i * 3 + j) % len(words)] for j in range(8)).capitalize() + f" {i + 1}."
            for i in range(count)]


def page_png(lines: list[str]) -> bytes:
    """A white A4 page at 150 dpi (1240 x 1754) with the lines in a 32 px font, as PNG."""
    image = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=32)
    for i, line in enumerate(lines):
        draw.text((100, 120 + 76 * i), line, fill=0, font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def texts(batch: int, request: int) -> list[str]:
    # Different texts per request, the same ones on both routes.
    return [f"Request {request}, text {i}: meshworker routes requests to model services on a mesh."
            for i in range(batch)]


def chat_request(model: str, max_tokens: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


# --- the routes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    session: aiohttp.ClientSession
    url: str
    envelope: bool  # the gateway's seed API wraps the backend's answer in {"data": ...}


class Routes:
    """HTTP sessions to each backend's unix socket on A (direct) and to the gateways: A's own
    (gateway) and B's, which forwards to A (forwarded); the model ids the mesh lists."""

    def __init__(self, mesh: Mesh, model_ids: dict[str, str], bare_envoy: str):
        self.node = mesh.providers["a"]
        self.gateways = {"gateway": self.node.url, "forwarded": mesh.forwarder.url}
        self.bare_envoy = bare_envoy  # routes every path to A's embeddings backend as it is
        self.models = model_ids  # service -> the id of the model it serves
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Self:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        for name in BUILTINS:
            sock = self.node.state_dir / "run" / f"svc-{name}.sock"
            self.sessions[name] = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)),
                                                        timeout=timeout)
        self.sessions["http"] = aiohttp.ClientSession(timeout=timeout)  # to both gateways
        return self

    async def __aexit__(self, *exc) -> None:
        for session in self.sessions.values():
            await session.close()

    def seed_api(self, route: str, service: str) -> Endpoint:
        """The seed's POST /service/<name> (the backend's POST /)."""
        if route == "direct":
            return Endpoint(self.sessions[service], "http://localhost/", False)
        return Endpoint(self.sessions["http"], f"{self.gateways[route]}/service/{service}", True)

    def api(self, route: str, service: str, path: str) -> Endpoint:
        """The backend's own API at `path`, proxied as is by the gateways under /service/<name>
        (by the bare Envoy at `path` itself)."""
        if route == "direct":
            return Endpoint(self.sessions[service], f"http://localhost{path}", False)
        if route == "envoy":
            return Endpoint(self.sessions["http"], f"{self.bare_envoy}{path}", False)
        return Endpoint(self.sessions["http"], f"{self.gateways[route]}/service/{service}{path}", False)

    def mesh_api(self, route: str, service: str, path: str) -> Endpoint:
        """The mesh's OpenAI API at `path` (routed by the body's model); directly, the backend's."""
        if route == "direct":
            return Endpoint(self.sessions[service], f"http://localhost{path}", False)
        return Endpoint(self.sessions["http"], f"{self.gateways[route]}{path}", False)

    def embeddings(self, api: str, route: str) -> Endpoint:
        if api == "seed":
            return self.seed_api(route, EMBEDDINGS)
        if api == "openai":
            return self.api(route, EMBEDDINGS, "/v1/embeddings")
        return self.mesh_api(route, EMBEDDINGS, "/v1/embeddings")

    def chat(self, route: str) -> Endpoint:
        return self.mesh_api(route, LLM, "/v1/chat/completions")


async def post_json(endpoint: Endpoint, payload: dict) -> dict:
    async with endpoint.session.post(endpoint.url, json=payload) as reply:
        body = await reply.read()
        if reply.status != 200:
            raise RuntimeError(f"POST {endpoint.url}: status {reply.status}: {body[:300]!r}")
    answer = json.loads(body)
    return answer["data"] if endpoint.envelope else answer


# --- one measurement each ------------------------------------------------------------------

async def embed_seconds(endpoint: Endpoint, openai: bool, batch: int, request: int, model: str = "") -> float:
    """Seconds for one embeddings request of `batch` texts (OpenAI's body naming `model`, if given)."""
    payload = {"input": texts(batch, request)} if openai else {"texts": texts(batch, request)}
    payload |= {"model": model} if model else {}
    start = time.perf_counter()
    answer = await post_json(endpoint, payload)
    elapsed = time.perf_counter() - start
    vectors = answer["data"] if openai else answer["embeddings"]
    if len(vectors) != batch:
        raise RuntimeError(f"{endpoint.url}: {len(vectors)} embeddings for {batch} texts")
    return elapsed


async def ocr_seconds(endpoint: Endpoint, png: bytes, lines: list[str]) -> tuple[float, int]:
    """Seconds to read the page, and how many of its lines came back exactly."""
    payload = {"image_base64": base64.b64encode(png).decode("ascii")}
    start = time.perf_counter()
    answer = await post_json(endpoint, payload)
    elapsed = time.perf_counter() - start
    read = set(answer["text"].splitlines())
    exact = sum(line in read for line in lines)
    if not answer["text"].strip():
        raise RuntimeError(f"{endpoint.url}: OCR read no text from the page")
    return elapsed, exact


async def llm_stream(endpoint: Endpoint, model: str, max_tokens: int) -> dict:
    """One streamed chat completion, timed as its server-sent events arrive."""
    chunks: list[float] = []
    text, tokens, done = [], 0, False
    start = time.perf_counter()
    async with endpoint.session.post(endpoint.url, json=chat_request(model, max_tokens)) as reply:
        if reply.status != 200:
            raise RuntimeError(f"POST {endpoint.url}: status {reply.status}: {(await reply.read())[:300]!r}")
        mesh = {"route": reply.headers.get("x-mesh-route", ""), "worker": reply.headers.get("x-mesh-worker", "")}
        async for line in reply.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"{endpoint.url}: error mid-stream: {event['error']}")
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            piece = event["choices"][0]["delta"].get("content") if event.get("choices") else None
            if piece:
                chunks.append(time.perf_counter())
                text.append(piece)
    end = time.perf_counter()
    if not done or not chunks:
        raise RuntimeError(f"{endpoint.url}: stream ended without text or [DONE]")
    decode_s = chunks[-1] - chunks[0]
    return {"ttft_s": chunks[0] - start, "total_s": end - start, "chunks": len(chunks), "tokens": tokens,
            "tokens_per_s": (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else None,
            "text": "".join(text), "mesh_route": mesh["route"], "mesh_worker": mesh["worker"]}
