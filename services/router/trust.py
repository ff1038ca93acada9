"""This node's TLS credentials for Envoy's peer listener and its mTLS clusters.

In an overlay, the CA holder certified this node's TLS key at join (services/identity/
overlay); that certificate lives as long as the node's Nebula certificate. Without one,
a node with the mesh secret derives the mesh CA and issues itself a short-lived
certificate, renewed here before it runs out.
"""

from __future__ import annotations

from services.common.config import Config
from services.identity import mesh_ca, overlay
from services.identity.mesh_ca import TlsCredentials


def credentials(cfg: Config, now: float) -> TlsCredentials | None:
    """None with neither: the node then serves its own clients and forwards nothing."""
    joined = overlay.overlay_mode_credentials(cfg.state_dir)
    if joined is not None:
        return joined
    if cfg.mesh_secret is None:
        return None
    return mesh_ca.secret_mode_credentials(cfg.mesh_secret, cfg.state_dir, cfg.worker_id, now)


def needs_renewal(cfg: Config, tls: TlsCredentials | None, now: float) -> bool:
    """Only a self-issued certificate is renewed here (the overlay's CA key is elsewhere)."""
    return (tls is not None and overlay.overlay_mode_credentials(cfg.state_dir) is None
            and mesh_ca.needs_renewal(tls.certificate_chain_pem, now))
