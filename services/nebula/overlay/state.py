"""Where the overlay's state lives in the state directory, and how it is read and written.

Every file is written atomically (temp file, fsync, rename: a crash leaves the old file or
the new one, never half of each). A file that exists but cannot be used raises
`StateError` naming the file and the way out; nothing here ever replaces one silently,
because a silently new CA would split the mesh.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.statefile import StateError, write_atomically
from services.identity.overlay import NODE_CERT_FILE, TLS_CA_CERT_FILE, TLS_CA_KEY_FILE
from services.identity.trust import CA_PROOF_FILE, MESH_FILE, OVERLAY_DIR, RECORD_FILE

STATE_VERSION = 1


class EnrollmentError(ValueError):
    """A refusal with a machine-readable code and an HTTP status, for joiners and the CLI."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass(frozen=True)
class NebulaPaths:
    """<state>/nebula/ on every member; <state>/nebula/authority/ only on the CA holder."""

    root: Path

    @classmethod
    def of(cls, state_dir: Path) -> NebulaPaths:
        return cls(Path(state_dir) / OVERLAY_DIR)

    ca_crt = property(lambda self: self.root / "ca.crt")
    host_crt = property(lambda self: self.root / "host.crt")
    host_key = property(lambda self: self.root / "host.key")
    # mesh.json, record.json and identity.proof are also read by services.identity.trust:
    # the mesh CA's key, its blocklist, and its proof of this node's identity key.
    mesh = property(lambda self: self.root / MESH_FILE)
    record = property(lambda self: self.root / RECORD_FILE)
    identity_proof = property(lambda self: self.root / CA_PROOF_FILE)
    config = property(lambda self: self.root / "config.yml")
    # The mesh TLS CA (Envoy's mTLS between nodes) and this node's certificate from it, read
    # by services.identity.overlay; the CA's key only on the CA holder.
    mesh_tls_ca_crt = property(lambda self: self.root / TLS_CA_CERT_FILE)
    node_tls_crt = property(lambda self: self.root / NODE_CERT_FILE)
    authority = property(lambda self: self.root / "authority")
    ca_key = property(lambda self: self.authority / "ca.key")
    tls_crt = property(lambda self: self.authority / "tls.crt")
    tls_key = property(lambda self: self.authority / "tls.key")
    mesh_tls_ca_key = property(lambda self: self.authority / TLS_CA_KEY_FILE)
    tokens = property(lambda self: self.authority / "tokens.json")
    allocations = property(lambda self: self.authority / "allocations.json")
    lock = property(lambda self: self.authority / "lock")

    def is_member(self) -> bool:
        return self.mesh.exists()

    def is_authority(self) -> bool:
        return self.ca_key.exists()


def write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from path; StateError (naming file and problem) if it is not one."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise StateError(f"{what} {path} is missing; restore it from a backup") from None
    except OSError as err:
        raise StateError(f"cannot read {what} {path}: {err.strerror}") from None
    except ValueError as err:
        raise StateError(f"{what} {path} is corrupt ({err}); restore it from a backup — "
                         "meshworker never replaces it by itself") from None
    if not isinstance(value, dict) or value.get("version") != STATE_VERSION:
        raise StateError(f"{what} {path} is corrupt or from another version (expected a JSON "
                         f"object with \"version\": {STATE_VERSION}); restore it from a backup")
    return value


def read_table(path: Path, what: str, key: str, fields: set[str], maps: str) -> dict[str, dict[str, Any]]:
    """The `key` table of a state file: entries (JSON objects holding at least `fields`)
    by name; StateError naming the file, and what the table should map, otherwise."""
    table = read_json(path, what).get(key)
    if not isinstance(table, dict) or not all(isinstance(e, dict) and fields <= set(e) for e in table.values()):
        raise StateError(f"{what} {path} is corrupt: {key!r} should map {maps}")
    return table


def write_table(path: Path, key: str, table: dict[str, Any]) -> None:
    write_json(path, {"version": STATE_VERSION, key: table})


def require(value: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    """value[key] if it is a `kind`; StateError naming the file otherwise."""
    item = value.get(key)
    if not isinstance(item, kind):
        raise StateError(f"{path} is corrupt: {key!r} should be a {kind.__name__}")
    return item


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on path: serialises enrollments across threads and processes.

    flock locks belong to an open file description, so two opens in one process exclude
    each other just as two processes do.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
