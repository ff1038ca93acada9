"""Test hosts in network namespaces: a bridge namespace and hosts joined to it by veth pairs.

Addresses exist only inside the namespaces the lab creates. The test process reaches a
host by running a function in a thread that has entered that host's namespace (setns),
so ordinary Python clients (urllib) work there without a single address outside.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Host:
    def __init__(self, lab: Lab, name: str, address: str):
        self.lab, self.name, self.address = lab, name, address
        self.netns = f"{lab.prefix}-{name}"

    def command(self, argv: list[str]) -> list[str]:
        """argv as run inside this host (`ip netns exec` execs it: the pid is the program's)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run fn in a thread inside this host's network namespace and return its result."""
        result: dict[str, object] = {}

        def enter_and_run() -> None:
            with open(f"/run/netns/{self.netns}") as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            try:
                result["value"] = fn(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = err

        thread = threading.Thread(target=enter_and_run, name=f"in-{self.netns}")
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        return result["value"]

    def link(self, up: bool) -> None:
        ip("-n", self.netns, "link", "set", "eth0", "up" if up else "down")


class Lab:
    """A switch namespace with a bridge; hosts get 10.77.0.N/24 on their eth0."""

    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or f"mwt{os.getpid()}"
        self.bridge_ns = f"{self.prefix}-sw"
        self.hosts: list[Host] = []
        ip("netns", "add", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def add_host(self, name: str) -> Host:
        host = Host(self, name, f"10.77.0.{len(self.hosts) + 11}")
        port = f"p{len(self.hosts)}"
        ip("netns", "add", host.netns)
        ip("link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name", port,
           "netns", self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Delete every namespace (their processes must be gone: a live one keeps its netns)."""
        for ns in [h.netns for h in self.hosts] + [self.bridge_ns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
