"""The image's HEALTHCHECK: exit 0 when this node's /health, asked through its own gateway
(Envoy, on the port the router wrote to gateway.json), says "healthy"; else 1, with why.

`meshworker status` would print the same document but exits 0 for a degraded node; Docker
(and compose's `depends_on: condition: service_healthy`) needs the verdict as an exit status.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from services.common import config, runtime_files


def main() -> int:
    cfg = config.load(os.environ)
    address = runtime_files.read_gateway(cfg)
    try:
        if address is None:
            raise OSError(f"no {runtime_files.gateway_path(cfg)} yet")
        with urllib.request.urlopen(f"{address.local_url}/health", timeout=4) as reply:
            status = json.load(reply).get("status")
    except urllib.error.HTTPError as err:  # 503: Envoy answers, the node is unhealthy
        status = f"HTTP {err.code}"
    except (OSError, ValueError, KeyError) as err:
        status = f"no answer ({err})"
    if status == "healthy":
        return 0
    print(f"node {cfg.worker_id}: {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
