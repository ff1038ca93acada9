"""The router's provider cache and configuration version, kept across its restarts.

Envoy keeps serving its last configuration while the router is down; a router that came
back with an empty cache would push a configuration without the peers Envoy was
forwarding to, and their requests would fail until looked up again. So the cache is
written (atomically, in the runtime directory) whenever a configuration is pushed, and
read back at start: what has not expired meanwhile is served at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from services.common.statefile import write_atomically
from services.router.providers import Entry, Provider, ProviderCache

log = logging.getLogger(__name__)
NAME = "router-cache.json"


def save(path: Path, cache: ProviderCache, version: int) -> None:
    entries = {service: {"fetched_at": entry.fetched_at,
                         "providers": [dataclasses.asdict(p) for p in entry.providers]}
               for service, entry in cache.entries.items()}
    write_atomically(path, json.dumps({"version": version, "entries": entries}))


def load(path: Path, now: float) -> tuple[ProviderCache, int]:
    """The cache with what is still live, and the last version pushed (0: none known)."""
    try:
        saved = json.loads(path.read_text())
        cache = ProviderCache()
        for service, entry in saved["entries"].items():
            live = [p for p in (Provider(**fields) for fields in entry["providers"]) if p.expires_at > now]
            if live:
                cache.entries[service] = Entry(live, float(entry["fetched_at"]))
        return cache, int(saved["version"])
    except FileNotFoundError:
        return ProviderCache(), 0
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("ignoring %s, which cannot be read (%s): providers will be looked up again", path, err)
        return ProviderCache(), 0
