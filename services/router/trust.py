"""This node's TLS credentials for Envoy's peer listener and its mTLS clusters.

In an overlay, the CA holder certified this node's TLS key at join (services/identity/
overlay); that certificate lives as long as the node's Nebula certificate, and is taken
as soon as a join leaves it on disk. Without one, a node with the mesh secret derives
the mesh CA and issues itself a short-lived certificate, renewed here before it runs out.
"""

from __future__ import annotations

import functools

from services.common.config import Config
from services.identity import mesh_ca, overlay
from services.identity.mesh_ca import TlsCredentials


@functools.cache
def _secret_mesh_id(secret: str) -> str:
    return mesh_ca.secret_mode_ca(secret).mesh_id


def current(cfg: Config, held: TlsCredentials | None, now: float) -> TlsCredentials | None:
    """The credentials Envoy should hold now: the overlay's when there are some, else the
    held self-issued ones until they are due for renewal, else fresh ones. None with
    neither an overlay nor a secret: the node then serves its own clients and forwards
    nothing."""
    joined = overlay.overlay_mode_credentials(cfg.state_dir)
    if joined is not None or cfg.mesh_secret is None:
        return joined
    if (held is None or held.mesh_id != _secret_mesh_id(cfg.mesh_secret)
            or mesh_ca.needs_renewal(held.certificate_chain_pem, now)):
        return mesh_ca.secret_mode_credentials(cfg.mesh_secret, cfg.state_dir, cfg.worker_id, now)
    return held
