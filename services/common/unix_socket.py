"""Unix sockets that only this node's user can connect to, from the moment they exist.

Every server of a node (gRPC components, the api, the backends) listens on one in the
runtime directory. Created under umask 0177, a socket is 0600 before anyone could
connect; one left by a killed predecessor is replaced, a live one never.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
BACKLOG = 2048  # connections queue until the server accepts them


@contextlib.contextmanager
def created_private() -> Iterator[None]:
    """Files and sockets created in this block are mode 0600."""
    old_umask = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(old_umask)


def remove_stale(path: Path) -> None:
    """Unlink a socket left by a dead server; refuse to clobber a live one or a non-socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; not removing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:  # refused: nobody listens, the file is stale
            log.info("removing stale socket %s", path)
            path.unlink(missing_ok=True)
            return
    raise RuntimeError(f"another server is already listening on {path}")


def prepared(path: Path) -> None:
    """The socket's directory exists (0700 when made here) and no stale socket is in the way."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_stale(path)


def listening(path: Path) -> socket.socket:
    """A listening unix socket at `path`, mode 0600, for a server that takes sockets."""
    prepared(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with created_private():
        sock.bind(str(path))
    sock.listen(BACKLOG)
    return sock


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket: supervisord's XML-RPC, Envoy's admin API, a backend."""

    def __init__(self, path: Path | str, timeout_s: float):
        super().__init__("localhost", timeout=timeout_s)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)
