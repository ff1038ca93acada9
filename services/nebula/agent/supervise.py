"""nebula as its own supervisord program, and the agent's handle on it (supervisord's XML-RPC).

nebula runs beside nebula-agent, not under it: killing the agent must leave the overlay
up (DESIGN.md, "What one crash may cost"). nebula's JSON log goes to a file in the runtime
directory, which the agent tails, parses and re-logs.
"""

from __future__ import annotations

import logging
import shutil
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

from services.common import supervisor
from services.common.config import Config
from services.nebula.overlay import node
from services.nebula.overlay.state import NebulaPaths, write_atomically

log = logging.getLogger(__name__)
PROGRAM = "nebula"
PRIORITY = 5  # before nebula-agent (10): the overlay comes first
TIMEOUT_S = 15.0
LOG_MAX_BYTES = 5 * 1024 * 1024


def program_section(nebula: str, config_path: Path, log_path: Path) -> str:
    return "\n".join([
        f"[program:{PROGRAM}]",
        f"command={nebula} -config {config_path}".replace("%", "%%"),
        f"priority={PRIORITY}",
        "autorestart=true",
        "startsecs=1",
        "startretries=100",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=10",
        "redirect_stderr=true",
        f"stdout_logfile={log_path}".replace("%", "%%"),
        f"stdout_logfile_maxbytes={LOG_MAX_BYTES}",
        "stdout_logfile_backups=1",
        "",
    ])


def nebula_program(cfg: Config) -> str | None:
    """The [program:nebula] section for <runtime>/programs/nebula.conf, or None without an
    overlay. Raises StateError (naming the file) when the overlay's state is unusable."""
    paths = NebulaPaths.of(cfg.state_dir)
    state = node.load(paths)
    if state is None:
        return None
    node.write_config(cfg, paths, state)
    return program_section(shutil.which("nebula") or "nebula", paths.config, node.log_path(cfg))


def program_file(cfg: Config) -> Path:
    return cfg.runtime_dir / "programs" / f"{PROGRAM}.conf"


def write_program(cfg: Config) -> bool:
    """Write programs/nebula.conf if it differs; True when it changed."""
    text = nebula_program(cfg)
    path = program_file(cfg)
    if text is None or (path.exists() and path.read_text() == text):
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, text, 0o644)
    return True


class Supervisor:
    """The agent's handle on the nebula program: a failed call is logged, never raised, as
    nebula keeps its last configuration and the next reconcile tries again."""

    def __init__(self, cfg: Config):
        self.supervisord = supervisor.Supervisor(cfg.runtime_dir, TIMEOUT_S)

    def available(self) -> bool:
        return self.supervisord.available()

    def _tried(self, what: str, call: Callable[[], str | None]) -> str:
        try:
            return call() or ""
        except (OSError, xmlrpc.client.Fault) as err:
            log.warning("supervisord did not %s nebula: %s", what, err)
            return ""

    def update(self) -> str:
        """Add nebula if supervisord does not run it yet, restart it if its section changed."""
        return self._tried("update", lambda: self.supervisord.update(PROGRAM))

    def apply(self, action: str) -> str:
        if action == "hup":
            return self._tried("signal", lambda: self.supervisord.signal(PROGRAM, "HUP") or "signalled")
        if action == "restart":
            return self._tried("restart", lambda: self.supervisord.restart(PROGRAM) or "restarted")
        return ""
