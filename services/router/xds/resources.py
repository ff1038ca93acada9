"""One MeshView → one Snapshot: every resource of every xDS type, under one version."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from services.identity.mesh_ca import TlsCredentials, spiffe_prefix
from services.router.xds import auth, clusters, listeners, models, routes
from services.router.xds.typed import TYPES, Secret, make
from services.router.xds.view import MeshView

LISTENER = TYPES + "envoy.config.listener.v3.Listener"
ROUTE = TYPES + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = TYPES + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPES + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = TYPES + "envoy.extensions.transport_sockets.tls.v3.Secret"
# Make before break (Envoy's xDS protocol docs): secrets and clusters before the
# endpoints, listeners and routes that refer to them.
PUSH_ORDER = (SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE)


@dataclass(frozen=True)
class Snapshot:
    version: int
    resources: dict[str, dict[str, Message]]  # type URL -> resource name -> resource

    def of(self, type_url: str, names: list[str] | None = None) -> list[Message]:
        """The resources of one type; only the named ones when Envoy asked for names."""
        found = self.resources.get(type_url, {})
        return [r for n, r in found.items() if not names or n in names]

    def drops_clusters_of(self, previous: Snapshot) -> bool:
        return bool(previous.resources.get(CLUSTER, {}).keys() - self.resources.get(CLUSTER, {}).keys())

    def keeping_clusters_of(self, previous: Snapshot) -> Snapshot:
        """This snapshot, with the clusters (and endpoints) `previous` had and this one drops
        still in: Envoy answers 503 for a route whose cluster went first, so a cluster goes
        only once the routes that named it have (break after make, Envoy's xDS docs)."""
        resources = dict(self.resources)
        for type_url in (CLUSTER, ENDPOINT):
            resources[type_url] = {**previous.resources.get(type_url, {}), **self.resources.get(type_url, {})}
        return Snapshot(self.version, resources)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def node_certificate(tls: TlsCredentials) -> dict[str, Any]:
    """This node's certificate and key, as Envoy's TlsCertificate (SDS `node-cert`)."""
    return {"certificate_chain": {"inline_bytes": _b64(tls.certificate_chain_pem)},
            "private_key": {"inline_bytes": _b64(tls.private_key_pem)}}


def mesh_validation(tls: TlsCredentials) -> dict[str, Any]:
    """What a peer's certificate must be (SDS `mesh-ca`): issued by the mesh CA, naming a node
    of this mesh, not on the CA's revocation list (an overlay's)."""
    validation = {"trusted_ca": {"inline_bytes": _b64(tls.trusted_ca_pem)},
                  "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"prefix": spiffe_prefix(tls.mesh_id)}}]}
    if tls.revocation_list_pem:
        validation["crl"] = {"inline_bytes": _b64(tls.revocation_list_pem)}
    return validation


def secrets(view: MeshView) -> list[Secret]:
    if view.tls is None:
        return []
    return [make(Secret, {"name": clusters.NODE_CERT, "tls_certificate": node_certificate(view.tls)}),
            make(Secret, {"name": clusters.MESH_CA, "validation_context": mesh_validation(view.tls)})]


def build(view: MeshView, version: int) -> Snapshot:
    by_type: dict[str, list[Message]] = {
        LISTENER: listeners.listeners(view),
        ROUTE: [routes.client_routes(view, models.client_routes(view), auth.over_limit_routes(view))]
        + ([routes.peer_routes(view, models.peer_routes(view))] if view.tls else []),
        CLUSTER: clusters.clusters(view) + models.model_clusters(view),
        ENDPOINT: clusters.endpoints(view) + models.endpoints(view),
        SECRET: secrets(view),
    }
    names = {LISTENER: "name", ROUTE: "name", CLUSTER: "name", ENDPOINT: "cluster_name", SECRET: "name"}
    return Snapshot(version, {t: {getattr(r, names[t]): r for r in found} for t, found in by_type.items()})
