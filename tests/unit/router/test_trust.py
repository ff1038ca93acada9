"""Which credentials the router hands Envoy: the overlay's, else self-issued and renewed."""

from __future__ import annotations

import dataclasses

from services.common.config import load
from services.identity import mesh_ca
from services.router import trust

T0 = 1_800_000_000.0


def config(tmp_path, secret: str | None = "a secret of the trust tests"):
    env = {"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_WORKER_ID": "node1"}
    return load(env | ({"MESHWORKER_MESH_SECRET": secret} if secret else {}))


def test_with_a_secret_the_node_issues_itself_a_certificate_and_keeps_it_until_due(tmp_path):
    cfg = config(tmp_path)
    first = trust.current(cfg, None, T0)
    assert first.spiffe_id == mesh_ca.spiffe_id(first.mesh_id, "node1")
    assert trust.current(cfg, first, T0 + 60) is first
    renewed = trust.current(cfg, first, T0 + mesh_ca.DEFAULT_LIFETIME_S * 0.6)
    assert renewed is not first and renewed.not_after > first.not_after
    assert renewed.mesh_id == first.mesh_id


def test_a_certificate_of_another_mesh_is_replaced(tmp_path):
    cfg = config(tmp_path)
    other = trust.current(dataclasses.replace(cfg, mesh_secret="the secret of another mesh"), None, T0)
    assert trust.current(cfg, other, T0).mesh_id != other.mesh_id


def test_an_overlays_certificate_wins_once_it_is_on_disk(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    held = trust.current(cfg, None, T0)
    joined = dataclasses.replace(held, mesh_id="0123456789abcdef")  # as the CA holder issued it
    monkeypatch.setattr(trust.overlay, "overlay_mode_credentials", lambda state_dir: joined)
    assert trust.current(cfg, held, T0) is joined


def test_without_secret_or_overlay_there_are_none(tmp_path):
    assert trust.current(config(tmp_path, secret=None), None, T0) is None
