"""The mesh's API keys as this router knows them.

This node's own entries (the keys it made, the revocations it made) live in
`<state_dir>/keys.json`, written whole on each change, and go out in its @keys record;
the other members' entries come from their records in the DHT (Router.keys_forever).
Which keys are in force follows from both (keys.in_force).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from services.common import keys
from services.common.keys import ApiKey
from services.common.statefile import StateError, write_atomically

FILE = "keys.json"
# Every node's key record shares one DHT value of about 6.5 KB (records.VALUE_BUDGET_BYTES):
# about 30 entries of ~150 bytes with the records around them. Past this a key would not
# reach every node, so it is refused when made.
MAX_MESH_KEYS = 24


class KeyBookError(ValueError):
    """A request about keys that cannot be done; says why."""


class KeyBook:
    def __init__(self, path: Path):
        self.path = path
        self.own = load(path)
        self.others: tuple[ApiKey, ...] = ()  # other members' entries, as last read

    def in_force(self, now: float) -> tuple[ApiKey, ...]:
        return keys.in_force([*self.others, *self.own], now)

    def create(self, name: str, now: float, requests_per_minute: int = 0, tokens_per_minute: int = 0,
               models: tuple[str, ...] = (), ttl_s: int = 0) -> tuple[ApiKey, str]:
        keys.check_name(name)
        if any(k.name == name for k in self.in_force(now)):
            raise KeyBookError(f"a key named {name!r} is in force already: revoke it first, or choose another name")
        if len({k.id for k in [*self.others, *self.own]}) >= MAX_MESH_KEYS:
            raise KeyBookError(f"the mesh holds {MAX_MESH_KEYS} keys and revocations, all its records can carry: "
                               "revoke keys that are no longer used (expired ones leave by themselves)")
        key, token = keys.make(name, now, requests_per_minute, tokens_per_minute, models, ttl_s)
        self._save([*self.own, key], now)
        return key, token

    def revoke(self, name: str, now: float) -> list[ApiKey]:
        """Every key in force named `name`, revoked by this node for the whole mesh."""
        found = [k for k in self.in_force(now) if k.name == name]
        if not found:
            raise KeyBookError(f"no key named {name!r} is in force (meshworker keys list)")
        gone = {k.id for k in found}
        self._save([k for k in self.own if k.id not in gone] + [keys.revoked(k) for k in found], now)
        return found

    def read(self, published: list[ApiKey]) -> bool:
        """Other members' entries as just read; whether they changed."""
        found = tuple(sorted(published, key=lambda k: (k.id, k.revoked)))
        changed, self.others = found != self.others, found
        return changed

    def _save(self, entries: list[ApiKey], now: float) -> None:
        """Keeps what still matters: an expired key, or its revocation, is nobody's any more."""
        self.own = [k for k in entries if not k.expired(now)]
        write_atomically(self.path, json.dumps([dataclasses.asdict(k) for k in self.own], indent=1) + "\n")


def load(path: Path) -> list[ApiKey]:
    try:
        listed = json.loads(path.read_text())
        return [ApiKey(**{**entry, "models": tuple(entry["models"])}) for entry in listed]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise StateError(f"{path} holds this node's API keys but cannot be read ({err}); move it aside "
                         "to start without them (the keys it made stop working)") from None
