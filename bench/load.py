"""A bounded closed-loop load whose every request is kept on a timeline: when it was sent,
when it ended, whether it failed, who served it. wrk counts failures but cannot say when
they stopped; a failover needs exactly that.

Each connection is a thread with a keep-alive client sending one request after another; a
failed request (an error status, a reset connection) is recorded and the connection opened
again. Python threads suffice: they wait on sockets, and the scenarios compare a node with
itself before and after a kill, not with another load generator.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Self

from bench.httpclient import HttpError, KeepAliveClient

REQUEST_TIMEOUT_S = 10
RECONNECT_PAUSE_S = 0.01


@dataclass(frozen=True)
class Sample:
    sent: float    # time.monotonic()
    ended: float
    status: int    # 0: no HTTP answer (refused, reset, timed out)
    worker: str    # X-Mesh-Worker of the answer
    detail: str = ""  # a failure's first bytes of body (or the error), to tell failures apart

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Connections:
    """`connections` threads running `_loop` from `with` until its end (then `_stop` is set,
    and each is waited for as long as its request may take)."""

    def __init__(self, connections: int, request_timeout_s: float = REQUEST_TIMEOUT_S):
        self._join_s = request_timeout_s + 5
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(connections)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._join_s)

    def _loop(self) -> None:
        raise NotImplementedError


class TimedLoad(Connections):
    def __init__(self, base_url: str, path: str, connections: int):
        self.base_url, self.path = base_url, path
        self.samples: list[Sample] = []  # list.append is atomic under the GIL
        super().__init__(connections)

    def _loop(self) -> None:
        client = None
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                client = client or KeepAliveClient(self.base_url, timeout_s=REQUEST_TIMEOUT_S)
                status, body = client.request("GET", self.path)
                worker = client.last_headers.get(b"x-mesh-worker", b"").decode()
                detail = "" if 200 <= status < 300 else body[:160].decode(errors="replace")
            except (OSError, HttpError, ValueError) as err:
                status, worker, detail = 0, "", f"{type(err).__name__}: {err}"[:160]
                if client is not None:
                    client.close()
                client = None
            self.samples.append(Sample(sent, time.monotonic(), status, worker, detail))
            if status == 0:
                time.sleep(RECONNECT_PAUSE_S)
        if client is not None:
            client.close()

    def between(self, start: float, end: float) -> list[Sample]:
        """Requests sent in [start, end)."""
        return [s for s in list(self.samples) if start <= s.sent < end]

    def busiest_worker(self, since: float) -> str:
        """The worker that answered most of the requests sent since `since`."""
        counts: dict[str, int] = {}
        for sample in self.between(since, float("inf")):
            if sample.ok and sample.worker:
                counts[sample.worker] = counts.get(sample.worker, 0) + 1
        return max(counts, key=counts.get) if counts else ""
