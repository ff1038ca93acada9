"""What a built-in backend needs, checked without importing it: light enough for every
process (config asks whether each built-in can run here; Starlette, uvicorn and torch
stay out of processes that serve none)."""

from __future__ import annotations

import importlib.util
import os


def offline_model_env() -> None:
    """Keep Hugging Face libraries off the network and out of stderr; call before importing them.

    They (and tqdm) read these variables once, at import. Models load from installed
    packages: a lookup on the hub would hang on a machine without network instead of
    failing fast. tqdm bars (weight loading, GGUF unpacking) have no switch of their own
    in the loaders and would fill the supervisord log with carriage-return lines.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def missing_modules_reason(required: tuple[str, ...], install_hint: str) -> str | None:
    """"not installed: <hint> (missing: …)" when a module a backend needs is absent, else
    None; looks the modules up without importing them (torch takes seconds)."""
    missing = [name for name in required if importlib.util.find_spec(name) is None]
    return f"not installed: {install_hint} (missing: {', '.join(missing)})" if missing else None
