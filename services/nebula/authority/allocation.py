"""The overlay address table: which address each certificate holds, until it expires.

An address is taken by the first certificate signed for it and stays taken until that
certificate's notAfter has passed, revoked or not: a revoked certificate is still valid
in time, and a peer that missed the blocklist must never meet a second host behind the
same address. Callers serialise read-modify-write with `state.locked`. Pure functions
over a dict; `load`/`save` are the only I/O.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from services.nebula.overlay.state import EnrollmentError, read_table, write_table


def live(table: dict[str, Any], now: float) -> dict[str, Any]:
    return {ip: e for ip, e in table.items() if e["expires_unix"] > now}


def next_free(table: dict[str, Any], network: str, now: float) -> str:
    """The lowest host address of network that no still-valid certificate holds."""
    taken = set(live(table, now))
    for address in ipaddress.ip_network(network).hosts():
        if str(address) not in taken:
            return str(address)
    raise EnrollmentError("network_full", f"every address of {network} is held by a valid "
                          "certificate; revoke nodes or start a mesh with a larger --network", 503)


def holder(table: dict[str, Any], name: str, now: float) -> str | None:
    """The address of the valid, unrevoked certificate named `name`, if any."""
    return next((ip for ip, e in live(table, now).items() if e["name"] == name and not e["revoked"]), None)


def assign(table: dict[str, Any], ip: str, name: str, fingerprint: str, expires_unix: int,
           lighthouse: bool = False, tls_serial: int | None = None) -> dict[str, Any]:
    """`tls_serial`: the serial of the mesh TLS certificate issued with it (None: none was),
    kept in hex as openssl prints it, since a 159-bit JSON number loses digits in many readers."""
    entry = {"name": name, "fingerprint": fingerprint, "expires_unix": expires_unix,
             "revoked": False, "lighthouse": lighthouse}
    return {**table, ip: entry | ({"tls_serial": f"{tls_serial:x}"} if tls_serial is not None else {})}


def revoked_tls_serials(table: dict[str, Any]) -> list[int]:
    """The TLS serials of every revoked certificate still in the table: an entry leaves it
    only when its address is reused, after the certificate (and its TLS twin) expired."""
    return sorted(int(e["tls_serial"], 16) for e in table.values() if e["revoked"] and "tls_serial" in e)


def revoke(table: dict[str, Any], name: str, now: float) -> tuple[dict[str, Any], str]:
    """The table with `name`'s certificate marked revoked, and that certificate's fingerprint."""
    ip = holder(table, name, now)
    if ip is None:
        raise LookupError(f"no node named {name!r} holds a valid, unrevoked certificate")
    if table[ip]["lighthouse"] and sum(not e["revoked"] and e["lighthouse"]
                                       for e in live(table, now).values()) == 1:
        raise LookupError(f"{name!r} is the mesh's only lighthouse")
    return {**table, ip: {**table[ip], "revoked": True}}, table[ip]["fingerprint"]


def load(path: Path) -> dict[str, Any]:
    hosts = read_table(path, "address table", "hosts", {"name", "fingerprint", "expires_unix", "revoked"},
                       "addresses to entries")
    return {ip: {"lighthouse": False, **e} for ip, e in hosts.items()}


def save(path: Path, table: dict[str, Any]) -> None:
    write_table(path, "hosts", table)
