"""A CA holder's state directory, made once per session with the real nebula-cert and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

from services.nebula import bootstrap
from services.nebula.authority.holder import SignedCert
from services.nebula.overlay.state import NebulaPaths

FAR_FUTURE = 4_000_000_000


def make_authority(root: Path, network: str = "10.42.0.0/24") -> Path:
    state = root / "ca-state"
    bootstrap.init_mesh(state, bootstrap.InitOptions(
        name="lh", network=network, advertise=("127.0.0.1",), nebula_port=4242, enroll_port=4243,
        sync_interval_s=2))
    return state


def copy_authority(template: Path, dest: Path) -> NebulaPaths:
    shutil.copytree(template, dest)
    return NebulaPaths.of(dest)


def fake_signer(name: str, ip_cidr: str, groups: list[str], public_key: str) -> SignedCert:
    """Stands in for nebula-cert where only the address table is under test (fast)."""
    return SignedCert(pem=f"cert for {name} {ip_cidr}", fingerprint=f"fp-{name}", expires_unix=FAR_FUTURE)
