"""Models: what a backend serves under the OpenAI API, as one value from its `/v1/models`
answer to the mesh's catalog and Envoy's routes.

Every node that serves models stores one record under the DHT name `CATALOG` listing
them (with the service that serves each and its load), so one lookup tells a router
every model of the mesh. Pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

CATALOG = "@models"  # no service may take this name (config.SERVICE_NAME has no "@")
KINDS = ("chat", "completion", "embedding")
# What a model id may be: OpenAI's and Hugging Face's ids ("org/name", "name:tag", dots), and
# nothing that could break out of a header value or a route.
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
# Past this load_percent requests wait at a provider (more in flight than it serves at once):
# it serves nobody new while another has room. At exactly its capacity it is full but no
# request waits; a sender's own sequential requests keep a one-at-a-time backend there.
SATURATED = 100


@dataclass(frozen=True)
class Model:
    id: str
    kind: str = "chat"
    context_length: int = 0


@dataclass(frozen=True)
class Offer:
    """One model as one worker serves it: through which service, and how busy that is."""

    model: Model
    worker_id: str
    service: str
    load_percent: int = 0


def load_percent(inflight: int, capacity: int) -> int:
    return round(100 * inflight / max(1, capacity))


def from_model_list(answer: bytes) -> tuple[Model, ...]:
    """The models of an OpenAI `GET /v1/models` answer; entries without a usable id are
    skipped. `kind` and `context_length` are ours (the built-ins send them; vLLM sends
    `max_model_len`); a server that names no kind serves chat."""
    try:
        listed = json.loads(answer).get("data")
    except (ValueError, AttributeError):
        return ()
    found = []
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not MODEL_ID.match(entry["id"]):
            continue
        kind = entry.get("kind") if entry.get("kind") in KINDS else "chat"
        context = entry.get("context_length") or entry.get("max_model_len") or 0
        found.append(Model(entry["id"], kind, context if isinstance(context, int) and context > 0 else 0))
    return tuple(found)
