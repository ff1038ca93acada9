"""The built-in services: whether this node can run each, and how to start one.

A built-in whose software is missing is not offered (never listed, never announced);
the reason, with the command that installs it, is shown by /health and `meshworker status`.
"""

from __future__ import annotations

import dataclasses
import shutil

from services.backends.embeddings import engine as embeddings_engine
from services.backends.llm import engine as llm_engine
from services.common.config import BUILTIN_SERVICES, Config


def offered(cfg: Config) -> Config:
    """cfg without the built-ins this machine cannot run, each named in `unavailable` with why
    (config.load reads only what was asked for: whether it can run is this machine's fact)."""
    unavailable = tuple((s.name, reason) for s in cfg.services
                        if s.name in BUILTIN_SERVICES and (reason := unavailable_reason(s.name)))
    kept = tuple(s for s in cfg.services if s.name not in dict(unavailable))
    return dataclasses.replace(cfg, services=kept, unavailable=unavailable)


def unavailable_reason(name: str) -> str | None:
    if name == "vision-ocr":
        return None if shutil.which("tesseract") else "not installed: apt-get install tesseract-ocr"
    if name == "rag-embeddings":
        return embeddings_engine.unavailable_reason()
    if name == "llm-inference":
        return llm_engine.unavailable_reason()
    raise KeyError(name)


def serve(name: str, socket_path: str, log_level: str) -> None:
    """Run a built-in backend's HTTP server on its unix socket until SIGTERM."""
    if name == "vision-ocr":
        from services.backends.ocr import main
    elif name == "rag-embeddings":
        from services.backends.embeddings import main
    elif name == "llm-inference":
        from services.backends.llm import main
    else:
        raise KeyError(name)
    main.serve(socket_path, log_level)
