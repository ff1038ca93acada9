"""supervisord program sections for the local backends that meshworker runs itself.

The four components are fixed in supervisord.conf; backends depend on the config, so
`meshworker up` renders one include file per backend with a command. Pure functions.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from services.common.config import ServiceConfig

# The fixed programs, and the include of the rendered ones: `up` runs supervisord on it, and
# supervisorctl needs it to find supervisord's socket.
SUPERVISORD_CONF = Path(__file__).resolve().parents[2] / "supervisord.conf"
BACKEND_PRIORITY = 40  # after the router (which health-checks them), before the gateway


def program_section(svc: ServiceConfig) -> str:
    return "\n".join([
        f"[program:{svc.program}]",
        # supervisord expands %(...)s in commands, so a literal % must be doubled.
        f"command={shlex.join(svc.command).replace('%', '%%')}",
        f"priority={BACKEND_PRIORITY}",
        "autorestart=true",
        "startsecs=1",
        "startretries=10",
        "stopasgroup=true",
        "killasgroup=true",
        "stopwaitsecs=10",
        "redirect_stderr=true",
        "stdout_logfile=/dev/stdout",
        "stdout_logfile_maxbytes=0",
        "",
    ])


def backend_programs(services: tuple[ServiceConfig, ...]) -> dict[str, str]:
    """File name → contents, for every service meshworker must start."""
    return {f"{s.program}.conf": program_section(s) for s in services if s.command}
