"""This node's membership of a mesh (mesh.json) and the latest mesh record it holds.

mesh.json is written once, by `init` or `join`; record.json is replaced whenever a newer
CA-signed record arrives. Both are checked on every load: a corrupt file is a StateError
naming it, never an empty mesh.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from services.nebula.overlay import records
from services.nebula.overlay.records import MeshRecord, RecordError
from services.nebula.overlay.state import STATE_VERSION, NebulaPaths, StateError, read_json, write_json


@dataclass(frozen=True)
class Membership:
    name: str
    network: str  # CIDR of the overlay, e.g. "10.42.0.0/16"
    overlay_ip: str
    ca_fingerprint: str
    ca_public_key: str  # hex; verifies mesh records
    lighthouse: bool
    enroll_addresses: tuple[str, ...]  # host:port of the CA holder's enrollment endpoint
    tls_sha256: str  # pin of that endpoint's X.509 certificate
    enroll_port: int = 0  # on the CA holder: the TCP port it serves enrollment on

    @property
    def prefix_len(self) -> int:
        return int(self.network.split("/")[1])


def load(paths: NebulaPaths) -> Membership | None:
    """None when this node is in no mesh; StateError when mesh.json is unusable."""
    if not paths.mesh.exists():
        return None
    doc = read_json(paths.mesh, "mesh membership")
    fields = {f.name: f for f in dataclasses.fields(Membership)}
    try:
        values = {k: doc[k] for k in fields if k in doc}
        values["enroll_addresses"] = tuple(values["enroll_addresses"])
        return Membership(**values)
    except (KeyError, TypeError) as err:
        raise StateError(f"mesh membership {paths.mesh} is corrupt ({err!r} missing or wrong); "
                         "restore it from a backup") from None


def save(paths: NebulaPaths, membership: Membership) -> None:
    doc = dataclasses.asdict(membership)
    doc["enroll_addresses"] = list(membership.enroll_addresses)
    write_json(paths.mesh, {"version": STATE_VERSION, **doc})


def load_record(paths: NebulaPaths, membership: Membership) -> tuple[MeshRecord, dict]:
    """The verified record and its signed form; StateError when record.json is unusable."""
    doc = read_json(paths.record, "mesh record")
    try:
        record = records.verify(doc.get("signed"), membership.ca_public_key, membership.ca_fingerprint)
    except RecordError as err:
        raise StateError(f"mesh record {paths.record} is unusable: {err}; restore it from a backup "
                         "or copy it from another member") from None
    return record, doc["signed"]


def save_record(paths: NebulaPaths, signed: dict) -> None:
    write_json(paths.record, {"version": STATE_VERSION, "signed": signed})
