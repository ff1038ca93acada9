"""An Announcer test double for the router's tests: it counts the times every record was to
be stored again."""

from __future__ import annotations


class CountingAnnouncer:
    def __init__(self) -> None:
        self.republished = 0

    def republish(self) -> None:
        self.republished += 1
