"""Health damping: a backend flips state only after several checks in a row agree.

One lost probe must not withdraw a service from the mesh, and one lucky probe must not
bring back a flapping one (the same hysteresis as Envoy's unhealthy_threshold and
healthy_threshold). Before the first check a backend is unknown, which counts as
unhealthy; the first check decides on its own so a node is usable as soon as it starts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HealthDamper:
    fail_threshold: int
    ok_threshold: int
    healthy: bool = False
    checked: bool = False
    streak: int = 0  # consecutive results that disagree with the current state
    last_error: str = "not checked yet"

    def observe(self, ok: bool, error: str = "") -> bool:
        """Feed one check result; returns True when the state changed."""
        if not ok:
            self.last_error = error
        changed = self._update(ok)
        if self.healthy:
            self.last_error = ""
        return changed

    def _update(self, ok: bool) -> bool:
        if not self.checked:
            self.checked = True
            changed = ok != self.healthy
            self.healthy = ok
            return changed
        if ok == self.healthy:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.ok_threshold if ok else self.fail_threshold):
            self.healthy, self.streak = ok, 0
            return True
        return False
