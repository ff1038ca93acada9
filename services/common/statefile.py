"""Files that must survive a crash: written whole or not at all.

Write to a fresh temporary file in the same directory, fsync, then rename (replace) or
link (create once) it into place and fsync the directory, so a crash leaves the old
file or the new one, and two processes creating the same file at once read the same one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class StateError(RuntimeError):
    """A state file exists but cannot be used; never silently replaced. Names the file."""


def _written_temp(path: Path, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600 from the start
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _sync_directory(directory: Path) -> None:
    """The rename itself must reach the disk too (fsync of the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    tmp = _written_temp(path, data.encode() if isinstance(data, str) else data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _sync_directory(path.parent)


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create path with data unless it exists; False when another writer got there first."""
    tmp = _written_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _sync_directory(path.parent)
    return True
