"""Join tokens: random, stored only as hashes, with an expiry, a use count and groups.

A token reads `<id>.<secret>` (as kubeadm's `abcdef.0123456789abcdef`): the id finds the
entry, the secret proves possession. Only SHA-256 of the secret is stored; the secret has
128 random bits, so a plain hash is enough (no password stretching needed). Pure
functions over a dict; `load`/`save` are the only I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Any

from services.nebula.overlay.state import EnrollmentError, read_table, write_table

GROUP = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
BASE_GROUP = "mesh"  # every member has it; the firewall admits the mesh by this group
LIGHTHOUSE_GROUP = "lighthouse"
RESERVED_GROUPS = frozenset({BASE_GROUP, LIGHTHOUSE_GROUP})
KEEP_EXPIRED_S = 7 * 86400  # long enough to tell a late joiner "expired", not "unknown"
_TOKEN = re.compile(r"^([0-9a-f]{8})\.([0-9a-f]{32})$")
_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """"90", "90s", "15m", "1h", "7d" -> seconds."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a duration like 30m, 1h or 7d, got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def check_groups(groups: list[str]) -> list[str]:
    for group in groups:
        if group in RESERVED_GROUPS:
            raise ValueError(f"group {group!r} is reserved ({BASE_GROUP} is implied; a lighthouse "
                             "token is made with --lighthouse)")
        if not GROUP.match(group):
            raise ValueError(f"group {group!r} is not a group name (a-z, 0-9, '_', '-', at most 32)")
    return sorted(set(groups))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(store: dict[str, Any], ttl_s: int, uses: int, groups: list[str], lighthouse: bool,
          now: float) -> tuple[str, dict[str, Any]]:
    """A new token's text and the store with its entry; the text itself is never stored."""
    token_id, secret = secrets.token_hex(4), secrets.token_hex(16)
    entry = {"hash": _digest(secret), "created_unix": int(now), "expires_unix": int(now + ttl_s),
             "uses_left": uses, "groups": check_groups(groups), "lighthouse": lighthouse}
    return f"{token_id}.{secret}", {**prune(store, now), token_id: entry}


def check(store: dict[str, Any], text: str, now: float) -> tuple[str, dict[str, Any]]:
    """(id, entry) of a token that may be used now; EnrollmentError saying why not."""
    match = _TOKEN.match(text.strip())
    entry = store.get(match.group(1)) if match else None
    if entry is None or not hmac.compare_digest(entry["hash"], _digest(match.group(2))):
        raise EnrollmentError("unknown_token", "unknown token: it was not issued by this lighthouse "
                              "(check for typos, or issue one with `meshworker token`)", 401)
    if now >= entry["expires_unix"]:
        expired = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry["expires_unix"]))
        raise EnrollmentError("token_expired", f"token {match.group(1)} expired at {expired}; "
                              "issue a new one with `meshworker token`", 401)
    if entry["uses_left"] <= 0:
        raise EnrollmentError("token_used_up", f"token {match.group(1)} is used up; issue a new "
                              "one with `meshworker token --uses N`", 401)
    return match.group(1), entry


def consume(store: dict[str, Any], token_id: str) -> dict[str, Any]:
    entry = store[token_id]
    return {**store, token_id: {**entry, "uses_left": entry["uses_left"] - 1}}


def prune(store: dict[str, Any], now: float) -> dict[str, Any]:
    return {k: e for k, e in store.items() if e["expires_unix"] + KEEP_EXPIRED_S > now}


def load(path: Path) -> dict[str, Any]:
    return read_table(path, "token store", "tokens", {"hash", "expires_unix", "uses_left", "groups"},
                      "ids to entries")


def save(path: Path, store: dict[str, Any]) -> None:
    write_table(path, "tokens", store)
