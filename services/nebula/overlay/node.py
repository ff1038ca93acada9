"""This node's overlay as the files say it is: membership, record, host certificate, and
the nebula config they imply. Shared by the agent and the CLI, so both render the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.common.config import Config
from services.nebula.overlay import membership, pki, render
from services.nebula.overlay.membership import Membership
from services.nebula.overlay.records import MeshRecord
from services.nebula.overlay.state import NebulaPaths, StateError, write_atomically


@dataclass(frozen=True)
class NodeState:
    member: Membership
    record: MeshRecord
    signed_record: dict
    cert: pki.CertInfo


def load(paths: NebulaPaths) -> NodeState | None:
    """None when this node is in no mesh; StateError naming the file when one is unusable."""
    member = membership.load(paths)
    if member is None:
        return None
    record, signed = membership.load_record(paths, member)
    ca, cert = pki.cert_info(paths.ca_crt), pki.cert_info(paths.host_crt)
    if ca.fingerprint != member.ca_fingerprint or cert.issuer != member.ca_fingerprint:
        raise StateError(f"{paths.ca_crt} or {paths.host_crt} is not of this node's mesh (CA "
                         f"{member.ca_fingerprint} in {paths.mesh}); restore them from a backup")
    return NodeState(member, record, signed, cert)


def view(cfg: Config, paths: NebulaPaths, state: NodeState) -> render.NodeView:
    return render.NodeView(
        ca=str(paths.ca_crt), cert=str(paths.host_crt), key=str(paths.host_key),
        overlay_ip=state.member.overlay_ip, listen_port=cfg.nebula_port,
        gateway_port=cfg.gateway_port, peer_port=cfg.peer_port, dht_port=cfg.dht_port,
        am_lighthouse=state.member.lighthouse,
        lighthouses=state.record.lighthouses, blocklist=state.record.blocklist,
        debug=cfg.log_level == "DEBUG", tun_dev=tun_dev(cfg))


def tun_dev(cfg: Config) -> str:
    return render.tun_dev_name(cfg.nebula_port, str(cfg.state_dir))


def write_config(cfg: Config, paths: NebulaPaths, state: NodeState) -> str:
    """Render config.yml; return what nebula must do to take it: none, hup or restart."""
    text = render.render(view(cfg, paths, state))
    old = paths.config.read_text() if paths.config.exists() else None
    action = render.reload_action(old, text)
    if action != "none":
        write_atomically(paths.config, text)
    return action


def log_path(cfg: Config) -> Path:
    return cfg.runtime_dir / "nebula.log"
