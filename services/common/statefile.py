"""Files that must survive a crash: written whole or not at all.

Write to a fresh temporary file in the same directory, fsync, then rename (replace) or
link (create once) it into place, so a crash leaves the old file or the new one, and two
processes creating the same file at once end up reading the same one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _written_temp(path: Path, data: bytes, mode: int) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600 from the start
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    os.replace(_written_temp(path, data, mode), path)


def create_once(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create path with data unless it exists; False when another writer got there first."""
    tmp = _written_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True
