"""What the router knows of the mesh, as the xDS translation takes it: plain frozen values."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from services.common.config import ServiceConfig
from services.common.keys import ApiKey
from services.common.models import SATURATED, Model
from services.identity.mesh_ca import TlsCredentials


@dataclass(frozen=True)
class LocalService:
    """A backend of this node, with the router's (damped) view of its health."""

    config: ServiceConfig
    healthy: bool

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Peer:
    """One provider of a remote service: its worker id and its mTLS peer listener."""

    worker_id: str
    host: str
    port: int

    @classmethod
    def from_url(cls, worker_id: str, url: str) -> Peer | None:
        """The peer behind an advertised `https://host:port`; None for anything else."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            return None
        if parts.scheme != "https" or not parts.hostname or not port:
            return None
        return cls(worker_id, parts.hostname, port)


@dataclass(frozen=True)
class RemoteService:
    """A service other nodes provide, as the router's cache holds it (never empty)."""

    name: str
    peers: tuple[Peer, ...]
    idempotent: bool


@dataclass(frozen=True)
class ModelProvider:
    """One node that serves a model, reached at its peer listener (this node's own too)."""

    peer: Peer
    service: str  # the provider's service that serves the model
    load_percent: int  # in flight over capacity at that backend (past SATURATED: requests wait)
    local: bool = False

    @property
    def saturated(self) -> bool:
        return self.load_percent > SATURATED


@dataclass(frozen=True)
class ModelRoute:
    """A model of the mesh: the service here that serves it (None: none), and every
    provider when some peer serves it too (empty: only this node does)."""

    model: Model
    local_service: str | None
    providers: tuple[ModelProvider, ...] = ()


@dataclass(frozen=True)
class MeshView:
    """Everything one configuration of this node's Envoy is made from."""

    worker_id: str
    listen_host: str
    client_port: int
    peer_port: int
    api_socket: str
    max_body_bytes: int
    health_interval_s: float
    health_fail_threshold: int
    health_ok_threshold: int
    local: tuple[LocalService, ...] = ()
    remote: tuple[RemoteService, ...] = ()
    tls: TlsCredentials | None = None  # None: no peer listener, and no forwarding
    models: tuple[ModelRoute, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # a name clients use -> a model id of `models`
    keys: tuple[ApiKey, ...] = ()  # the mesh's API keys in force
    client_auth: str = "keys"  # "open": nobody needs a key
    loopback_exempt: bool = True  # loopback clients need no key
    blocked: tuple[tuple[str, int], ...] = ()  # keys past a limit: (name, seconds until their minute ends)
    overlay_address: str = ""  # this node's, in an overlay: its peers connect to it alone

    def names_of(self, model_id: str) -> tuple[str, ...]:
        """A model's id and the aliases it is known by here."""
        return (model_id, *(alias for alias, target in self.aliases if target == model_id))

    def remote_of(self, name: str) -> RemoteService | None:
        return next((r for r in self.remote if r.name == name), None)
