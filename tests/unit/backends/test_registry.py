"""Which built-ins this machine offers (services/backends/registry.py)."""

from __future__ import annotations

from services.backends import registry
from services.common.config import load


def test_a_builtin_that_is_not_installed_is_not_offered_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr("services.backends.registry.shutil.which", lambda name: None)

    cfg = registry.offered(load({"MESHWORKER_STATE_DIR": str(tmp_path)}))

    assert [s.name for s in cfg.services] == ["rag-embeddings", "llm-inference"]
    assert cfg.unavailable == (("vision-ocr", "not installed: apt-get install tesseract-ocr"),)


def test_config_names_every_builtin_asked_for_whatever_is_installed(tmp_path, monkeypatch):
    monkeypatch.setattr("services.backends.registry.shutil.which", lambda name: None)

    assert [s.name for s in load({"MESHWORKER_STATE_DIR": str(tmp_path)}).services] == [
        "vision-ocr", "rag-embeddings", "llm-inference"]
