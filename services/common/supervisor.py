"""This node's supervisord, over the XML-RPC interface on its unix socket in the runtime
directory: the interface supervisorctl itself speaks (supervisord's docs, "XML-RPC API").

Calls block (up to TIMEOUT_S); a process with an event loop runs them in a thread.
"""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path

from services.common.unix_socket import UnixHTTPConnection

TIMEOUT_S = 15.0
# supervisor.xmlrpc.Faults.NOT_RUNNING: importing supervisor here would load its whole RPC
# machinery into processes that need one number.
NOT_RUNNING = 70


class UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: Path, timeout_s: float):
        super().__init__()
        self.path, self.timeout_s = path, timeout_s

    def make_connection(self, host):
        connection = UnixHTTPConnection(self.path, self.timeout_s)
        self._connection = host, connection  # closed by Transport.close()
        return connection


class Supervisor:
    """Raises OSError when supervisord cannot be reached, xmlrpc.client.Fault when it refuses."""

    def __init__(self, runtime_dir: Path, timeout_s: float = TIMEOUT_S):
        self.socket_path = runtime_dir / "supervisor.sock"
        self.timeout_s = timeout_s

    def available(self) -> bool:
        return self.socket_path.exists()

    def _call(self, method: str, *args):
        with xmlrpc.client.ServerProxy("http://localhost",
                                       transport=UnixTransport(self.socket_path, self.timeout_s)) as proxy:
            return getattr(proxy.supervisor, method)(*args)

    def state_of(self, program: str) -> str:
        """supervisord's name for the program's state (RUNNING, STARTING, EXITED, BACKOFF, ...).

        Any request also turns supervisord's loop, which otherwise notices an exited program only
        when a program's output or its one-second poll timeout wakes it: a restart comes up to a
        second sooner for a caller that asks as soon as it sees the program gone."""
        return self._call("getProcessInfo", program)["statename"]

    def signal(self, program: str, name: str) -> None:
        self._call("signalProcess", program, name)

    def restart(self, program: str) -> None:
        try:
            self._call("stopProcess", program, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != NOT_RUNNING:
                raise
        self._call("startProcess", program, True)

    def update(self, group: str) -> str:
        """What supervisorctl's `update <group>` does: re-read the configuration, then add the
        group if it is new, or replace it (a restart) if its section changed. Says which, or ""."""
        added, changed, removed = self._call("reloadConfig")[0]
        if group in removed or group in changed:
            self._call("stopProcessGroup", group, True)
            self._call("removeProcessGroup", group)
        if group in added or group in changed:
            self._call("addProcessGroup", group)
        return next((what for what, groups in [("added", added), ("updated", changed), ("removed", removed)]
                     if group in groups), "")
