"""Scenario 7, model services: the three built-ins (rag-embeddings, vision-ocr, llm-inference)
called directly on their backends' unix sockets and through the gateway of node A, which runs
them as its own supervised programs; the LLM also through a forwarded route: node B hosts
nothing and forwards to A (client -> B's gateway -> A's gateway -> A's backend), both on
loopback in one mesh.

- Embeddings: texts per second in requests of 1 and of 32 texts (batch size over the median
  request's time), on two paths: the seed's envelope (`POST /service/rag-embeddings`, which
  Envoy hands to the api process, which calls the backend and wraps its answer; directly
  `POST /`) and the transparent path (`POST /service/rag-embeddings/v1/embeddings`, the
  backend's own OpenAI API carried by Envoy alone; directly `POST /v1/embeddings`). The
  gateway's share of a batch-1 request is judged on both (issue #9: ≤ 3 %).
- OCR: seconds for one rendered A4 page of text (`POST /service/vision-ocr`; directly `POST /`).
- LLM: a streamed chat completion (`/v1/chat/completions`, `"stream": true`) of a fixed
  prompt at temperature 0: time to the first chunk with text, and decode speed, i.e. the
  tokens after the first (the usage chunk's count) over the time from the first text chunk to
  the last; a route's figures are the median of its streams in the run. Three routes: direct,
  gateway and forwarded; what forwarding adds is forwarded's time to first token less direct's.

Each run measures every workload on each of its routes back to back, the order rotating from
one sample to the next; ratios (gateway or forwarded over direct) and differences are taken
within a run, then the median over runs. "Gateway share" is the part of a request's time
through the gateway that direct calls do not spend: (gateway - direct) / gateway. B's first
stream, in the warm-up, resolves the route through the DHT; the measured ones come from its
route cache. The mesh is this scenario's own (loading the models takes ~20 s and ~1 GiB) and
is stopped when the scenario ends.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Self

import aiohttp
from PIL import Image, ImageDraw, ImageFont

from bench import procs, stats
from bench.context import Context, Settings, mesh_started
from bench.mesh import Mesh
from bench.report import Row, ScenarioResult, Target
from bench.targets import Hosted, Node, http_get_json

NAME = "models"
EMBEDDINGS, OCR, LLM = "rag-embeddings", "vision-ocr", "llm-inference"
BUILTINS = (OCR, EMBEDDINGS, LLM)
ROUTES = ("direct", "gateway")  # every workload's
LLM_ROUTES = (*ROUTES, "forwarded")  # the streamed completion's
# Loading the LLM takes ~20 s on 2 cores, beside the embeddings model: room for a busy machine.
MODELS_READY_DEADLINE_S = 180
REQUEST_TIMEOUT_S = 120
# A full run takes ~12 s here (2 CPUs); runs stop starting after this much a run on average.
RUN_BUDGET_S = 30
NPROC = len(os.sched_getaffinity(0))
NOISY_OTHERS_CPUS = 0.25  # others busy on more than this many CPUs on average: say the run is noisy
BIG_BATCH = 32
RATIO_TARGET = 1.05        # time through the gateway over direct: OCR page, first token
SPEED_SHARE_TARGET = 0.95  # rate through the gateway over direct: tokens/s, batch-32 texts/s
SHARE_TARGET_PCT = 5.0     # the gateway's share of a request's time: "negligible"
SMALL_SHARE_TARGET_PCT = 3.0  # issue #9: its share of a batch-1 embeddings request, either path
FORWARDED_ADDED_MS = 5.0   # forwarded time to first token less direct: "no more than a few milliseconds"
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


def chat_request(max_tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}


# --- the routes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    session: aiohttp.ClientSession
    url: str
    envelope: bool  # the gateway's seed API wraps the backend's answer in {"data": ...}


class Routes:
    """HTTP sessions to each backend's unix socket on A (direct) and to the gateways: A's own
    (gateway) and B's, which forwards to A (forwarded)."""

    def __init__(self, mesh: Mesh):
        self.node = mesh.providers["a"]
        self.gateways = {"gateway": self.node.url, "forwarded": mesh.forwarder.url}
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
        """The backend's own API at `path`, proxied as is by the gateways under /service/<name>."""
        if route == "direct":
            return Endpoint(self.sessions[service], f"http://localhost{path}", False)
        return Endpoint(self.sessions["http"], f"{self.gateways[route]}/service/{service}{path}", False)


async def post_json(endpoint: Endpoint, payload: dict) -> dict:
    async with endpoint.session.post(endpoint.url, json=payload) as reply:
        body = await reply.read()
        if reply.status != 200:
            raise RuntimeError(f"POST {endpoint.url}: status {reply.status}: {body[:300]!r}")
    answer = json.loads(body)
    return answer["data"] if endpoint.envelope else answer


# --- one measurement each ------------------------------------------------------------------

async def embed_seconds(endpoint: Endpoint, openai: bool, batch: int, request: int) -> float:
    """Seconds for one embeddings request of `batch` texts."""
    payload = {"input": texts(batch, request)} if openai else {"texts": texts(batch, request)}
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


async def llm_stream(endpoint: Endpoint, max_tokens: int) -> dict:
    """One streamed chat completion, timed as its server-sent events arrive."""
    chunks: list[float] = []
    text, tokens, done = [], 0, False
    start = time.perf_counter()
    async with endpoint.session.post(endpoint.url, json=chat_request(max_tokens)) as reply:
        if reply.status != 200:
            raise RuntimeError(f"POST {endpoint.url}: status {reply.status}: {(await reply.read())[:300]!r}")
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
            "text": "".join(text)}


# --- a run ---------------------------------------------------------------------------------

def order(*keys: int, routes: tuple[str, ...] = ROUTES) -> tuple[str, ...]:
    """The routes, rotated by the sum of the sample's keys: with two, direct first or gateway
    first as the sum is even or odd."""
    first = sum(keys) % len(routes)
    return routes[first:] + routes[:first]


def share(direct_s: float, route_s: float) -> float:
    """Percent of a route's time (gateway or forwarded) that the direct route does not spend."""
    return 100 * (route_s - direct_s) / route_s


async def measure_embeddings(routes: Routes, settings: Settings, index: int) -> dict:
    """Requests one at a time, the routes taking turns; a route's figure is its median request,
    so one request slowed by a neighbour does not move it."""
    result = {}
    workloads = [(api, batch, requests) for api in ("seed", "openai")
                 for batch, requests in ((1, settings.embed_requests), (BIG_BATCH, settings.embed_batches))]
    for k, (api, batch, requests) in enumerate(workloads):
        seconds: dict[str, list[float]] = {route: [] for route in ROUTES}
        for i in range(requests):
            for route in order(index, k, i):
                endpoint = routes.seed_api(route, EMBEDDINGS) if api == "seed" else \
                    routes.api(route, EMBEDDINGS, "/v1/embeddings")
                seconds[route].append(await embed_seconds(endpoint, api == "openai", batch, i))
        median_s = {route: stats.median(values) for route, values in seconds.items()}
        result[f"{api}_batch{batch}"] = {
            "requests": requests,
            "seconds": seconds,
            "texts_per_s": {route: batch / s for route, s in median_s.items()},
            "ms_per_request": {route: 1e3 * s for route, s in median_s.items()},
            "ratio": median_s["direct"] / median_s["gateway"],  # texts/s through the gateway over direct
            "added_ms": 1e3 * (median_s["gateway"] - median_s["direct"]),
            "share_pct": share(median_s["direct"], median_s["gateway"]),
        }
    return result


async def measure_ocr(routes: Routes, png: bytes, lines: list[str], index: int) -> dict:
    seconds, exact = {}, {}
    for route in order(index):
        seconds[route], exact[route] = await ocr_seconds(routes.seed_api(route, OCR), png, lines)
    return {"seconds": seconds, "lines_read_exactly": exact, "lines": len(lines),
            "ratio": seconds["gateway"] / seconds["direct"], "share_pct": share(seconds["direct"], seconds["gateway"])}


async def measure_llm(routes: Routes, settings: Settings, index: int) -> dict:
    streams: dict[str, list[dict]] = {route: [] for route in LLM_ROUTES}
    for k in range(settings.llm_streams):
        for route in order(index, k, routes=LLM_ROUTES):
            endpoint = routes.api(route, LLM, "/v1/chat/completions")
            streams[route].append(await llm_stream(endpoint, settings.llm_max_tokens))

    def med(route: str, key: str) -> float | None:
        values = [s[key] for s in streams[route] if s[key] is not None]
        return stats.median(values) if values else None

    result = {route: {key: med(route, key) for key in ("ttft_s", "tokens_per_s", "total_s", "tokens")}
              for route in LLM_ROUTES}
    for route in LLM_ROUTES[1:]:
        result[route] |= versus_direct(result["direct"], result[route])
    # Greedy decoding: every route must have streamed the very same text.
    result["same_text"] = len({s["text"] for route in LLM_ROUTES for s in streams[route]}) == 1
    result["streams"] = streams
    return result


def versus_direct(direct: dict, other: dict) -> dict:
    """A route's streams against the direct ones of the same run."""
    rates = (other["tokens_per_s"], direct["tokens_per_s"])
    return {"ttft_ratio": other["ttft_s"] / direct["ttft_s"],
            "added_ttft_ms": 1e3 * (other["ttft_s"] - direct["ttft_s"]),
            "tokens_per_s_ratio": rates[0] / rates[1] if all(rates) else None,
            "share_pct": share(direct["total_s"], other["total_s"])}


async def one_run(routes: Routes, ctx: Context, png: bytes, lines: list[str], index: int) -> dict:
    started, busy, ours = time.perf_counter(), procs.busy_cpu_s(), procs.tree_cpu_s(os.getpid())
    run = {"embeddings": await measure_embeddings(routes, ctx.settings, index),
           "ocr": await measure_ocr(routes, png, lines, index),
           "llm": await measure_llm(routes, ctx.settings, index)}
    # What else ran meanwhile: the machine's CPU time less ours (the bench, the node, its models).
    run["seconds"] = time.perf_counter() - started
    run["other_cpu_s"] = max(0.0, procs.busy_cpu_s() - busy - (procs.tree_cpu_s(os.getpid()) - ours))
    ctx.progress(f"{NAME} run {index + 1}/{ctx.settings.runs}: {run_summary(run)}")
    return run


def run_summary(run: dict) -> str:
    emb, ocr, llm = run["embeddings"], run["ocr"], run["llm"]
    others = run["other_cpu_s"] / run["seconds"]
    return (
        "embeddings batch 1 "
        f"{emb['seed_batch1']['texts_per_s']['direct']:.0f} direct / "
        f"{emb['seed_batch1']['texts_per_s']['gateway']:.0f} gateway texts/s "
        f"({emb['seed_batch1']['added_ms']:+.2f} ms a request), batch {BIG_BATCH} "
        f"{emb[f'seed_batch{BIG_BATCH}']['texts_per_s']['direct']:.0f} / "
        f"{emb[f'seed_batch{BIG_BATCH}']['texts_per_s']['gateway']:.0f}; OCR page "
        f"{ocr['seconds']['direct']:.2f} / {ocr['seconds']['gateway']:.2f} s; LLM first token "
        + " / ".join(f"{1e3 * llm[route]['ttft_s']:.0f}" for route in LLM_ROUTES) + " ms (forwarded "
        f"{llm['forwarded']['added_ttft_ms']:+.1f} ms), "
        + " / ".join(f"{llm[route]['tokens_per_s'] or 0:.1f}" for route in LLM_ROUTES) + " tokens/s; "
        f"{run['seconds']:.1f} s" + (f"; other processes kept {others:.1f} of {NPROC} CPUs busy: noisy run"
                                    if others > NOISY_OTHERS_CPUS else ""))


async def warm_up(routes: Routes) -> None:
    """One unmeasured call of each kind on each route: connections open, first-call costs paid
    (OCR runs a fresh tesseract per page, so a page is not worth its seconds here), and B's
    route to A resolved through the DHT, so the measured forwarded streams come from its cache."""
    for route in ROUTES:
        await embed_seconds(routes.seed_api(route, EMBEDDINGS), False, 1, 0)
        await embed_seconds(routes.seed_api(route, EMBEDDINGS), False, BIG_BATCH, 0)
        await embed_seconds(routes.api(route, EMBEDDINGS, "/v1/embeddings"), True, 1, 0)
    for route in LLM_ROUTES:
        await llm_stream(routes.api(route, LLM, "/v1/chat/completions"), 2)
    async with routes.sessions[OCR].get("http://localhost/health") as reply:  # the gateway's is open
        await reply.read()


async def measure(mesh: Mesh, ctx: Context, png: bytes, lines: list[str]) -> list[dict]:
    """The runs, as many as the settings ask unless they outlast the budget (a machine busy with
    something else can make a model 40 times slower): then the runs done so far."""
    give_up_at = time.monotonic() + RUN_BUDGET_S * ctx.settings.runs
    runs: list[dict] = []
    async with Routes(mesh) as routes:
        await warm_up(routes)
        for i in range(ctx.settings.runs):
            if runs and time.monotonic() > give_up_at:
                ctx.progress(f"{NAME}: past its budget of {RUN_BUDGET_S * ctx.settings.runs:.0f} s; "
                             f"figures from {len(runs)} of {ctx.settings.runs} runs")
                break
            runs.append(await one_run(routes, ctx, png, lines, i))
    return runs


# --- the scenario --------------------------------------------------------------------------

def backends_described(node: Node) -> dict:
    """Model, load time and memory of each backend, as the node's /stats reports them."""
    try:
        return {b["name"]: b for b in http_get_json(f"{node.url}/stats", timeout_s=10).get("backends", [])}
    except (OSError, ValueError) as err:
        return {"error": str(err)}


def run(ctx: Context) -> ScenarioResult:
    lines = page_lines(ctx.settings.ocr_lines)
    png = page_png(lines)
    ctx.progress(f"starting a two-node mesh: A runs {', '.join(BUILTINS)} (waits for the models to load), "
                 "B forwards")
    with Mesh({"a": lambda _: [Hosted(name) for name in BUILTINS]},
              ready_deadline_s=MODELS_READY_DEADLINE_S) as mesh:
        healthy_after_s = mesh.providers["a"].healthy_after_s
        ctx.progress(f"{mesh_started(mesh)}; A healthy after {healthy_after_s:.1f} s")
        backends = backends_described(mesh.providers["a"])
        runs = asyncio.run(measure(mesh, ctx, png, lines))
    ctx.progress("models mesh stopped")
    raw = {"runs_done": len(runs), "prompt": PROMPT, "max_tokens": ctx.settings.llm_max_tokens,
           "page_png_bytes": len(png), "page_lines": len(lines), "healthy_after_s": healthy_after_s,
           "backends": backends, "runs": runs}
    return ScenarioResult(summarize(runs, healthy_after_s), raw)


def summarize(runs: list[dict], healthy_after_s: float) -> list[Row]:
    def med(path: str) -> float | None:
        values = [value for r in runs if (value := dig(r, path)) is not None]
        return stats.median(values) if values else None

    rows = []
    paths = (("seed", "envelope POST /service/rag-embeddings"),
             ("openai", "transparent /service/rag-embeddings/v1/embeddings"))
    for api, label in paths:
        for batch in (1, BIG_BATCH):
            key = f"embeddings.{api}_batch{batch}"
            target = Target(">=", SPEED_SHARE_TARGET, of="ratio") if batch > 1 else None
            rows.append(Row(f"embeddings, batch {batch}, {label} (texts/s)", med(f"{key}.texts_per_s.gateway"),
                            med(f"{key}.texts_per_s.direct"), "direct", target, ratio=med(f"{key}.ratio")))
    share_target = Target("<=", SHARE_TARGET_PCT, unit="%")
    small_share_target = Target("<=", SMALL_SHARE_TARGET_PCT, unit="%")
    for api, label in paths:
        rows += [
            Row(f"gateway's added time per embeddings request, batch 1, {label} (ms)",
                med(f"embeddings.{api}_batch1.added_ms")),
            Row(f"gateway share of the time, embeddings batch 1, {label} (%)",
                med(f"embeddings.{api}_batch1.share_pct"), target=small_share_target),
            Row(f"gateway share of the time, embeddings batch {BIG_BATCH}, {label} (%)",
                med(f"embeddings.{api}_batch{BIG_BATCH}.share_pct"), target=share_target),
        ]
    rows += [
        Row("OCR, one A4 page (s)", med("ocr.seconds.gateway"), med("ocr.seconds.direct"), "direct",
            Target("<=", RATIO_TARGET, of="ratio"), ratio=med("ocr.ratio")),
        Row("LLM time to first token (ms)", scaled(med("llm.gateway.ttft_s"), 1e3),
            scaled(med("llm.direct.ttft_s"), 1e3), "direct", Target("<=", RATIO_TARGET, of="ratio"),
            ratio=med("llm.gateway.ttft_ratio")),
        Row("LLM time to first token, forwarded (ms)", scaled(med("llm.forwarded.ttft_s"), 1e3),
            scaled(med("llm.direct.ttft_s"), 1e3), "direct", ratio=med("llm.forwarded.ttft_ratio")),
        Row("forwarded route's added time to first token over direct (ms)",
            med("llm.forwarded.added_ttft_ms"), target=Target("<=", FORWARDED_ADDED_MS, unit="ms")),
        Row("LLM tokens/s, streamed", med("llm.gateway.tokens_per_s"), med("llm.direct.tokens_per_s"), "direct",
            Target(">=", SPEED_SHARE_TARGET, of="ratio"), ratio=med("llm.gateway.tokens_per_s_ratio")),
        Row("LLM tokens/s, streamed, forwarded", med("llm.forwarded.tokens_per_s"),
            med("llm.direct.tokens_per_s"), "direct", ratio=med("llm.forwarded.tokens_per_s_ratio")),
        Row("gateway share of the time, streamed completion (%)", med("llm.gateway.share_pct"),
            target=share_target),
        Row("time from `meshworker up` to healthy, three models loaded (s)", healthy_after_s),
    ]
    return rows


def dig(record: dict, path: str):
    for key in path.split("."):
        record = record[key]
    return record


def scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor

