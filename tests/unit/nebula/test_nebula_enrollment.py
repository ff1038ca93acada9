"""Enrollment end to end on loopback: the real HTTPS endpoint, real nebula-cert, the joiner's
pinning, and every refusal of the issue's "Bad input" section."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from services.common import config
from services.identity import overlay
from services.identity.mesh_ca import NODE_KEY_FILE, spiffe_id
from services.identity.node_key import NodeIdentity
from services.identity.proofs import check_ca_proof, proof_kind
from services.identity.trust import mesh_trust
from services.nebula import bootstrap, cli, client
from services.nebula.agent import supervise
from services.nebula.agent.core import Agent
from services.nebula.authority import holder, server
from services.nebula.authority.ratelimit import JoinRateLimiter
from services.nebula.overlay import membership, node, pki, records
from services.nebula.overlay.state import EnrollmentError, NebulaPaths, StateError
from tests.unit.identity import test_envoy_tls as envoy_tls  # its real-Envoy helpers, not its tests

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Endpoint:
    """The enrollment app served from its own event loop thread, as nebula-agent serves it."""

    def __init__(self, paths: NebulaPaths, limiter: JoinRateLimiter | None = None):
        self.clock, self.registry = Clock(), CollectorRegistry()
        self.app = server.EnrollmentApp(paths, self.registry, limiter, self.clock)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = self._run(server.start(self.app, "127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.runner.addresses[0][1]}"
        self.member = membership.load(paths)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def attempts(self) -> float:
        return sum(s.value for f in self.registry.collect() for s in f.samples if s.name.endswith("_total"))

    def join_options(self, token: str, name: str = "node2", **changes) -> bootstrap.JoinOptions:
        return bootstrap.JoinOptions(**{"addresses": (self.address,), "token": token, "name": name,
                                               "ca_fingerprint": self.member.ca_fingerprint,
                                               "tls_sha256": self.member.tls_sha256, **changes})

    def post(self, body) -> tuple[int, dict]:
        return client.request(self.address, self.member.tls_sha256, "POST", "/v1/join", body)

    def close(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def endpoint(ca_paths):
    ep = Endpoint(ca_paths)
    yield ep
    ep.close()


def token(ep: Endpoint, uses: int = 1, ttl: int = 3600, **kw) -> str:
    return holder.issue_token(ep.app.paths, ttl, uses, kw.get("groups", []), kw.get("lighthouse", False),
                                 time.time())


def test_join_gets_a_certificate_for_a_key_that_never_left(endpoint, tmp_path):
    member = bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint, groups=["gpu"])))
    paths = NebulaPaths.of(tmp_path / "n2")
    cert = pki.cert_info(paths.host_crt)

    assert member.overlay_ip == "10.42.0.2" and member.network == "10.42.0.0/24"
    assert cert.issuer == endpoint.member.ca_fingerprint and cert.groups == ("mesh", "gpu")
    assert paths.host_key.stat().st_mode & 0o777 == 0o600
    assert node.load(paths).record.lighthouses == {"10.42.0.1": ["127.0.0.1:4242"]}
    assert not (endpoint.app.paths.authority / ".sign-node2.crt").exists()


def test_join_certifies_the_nodes_identity_key_for_its_certificate(endpoint, tmp_path):
    bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint)))
    paths, key = NebulaPaths.of(tmp_path / "n2"), NodeIdentity.load_or_create(tmp_path / "n2").public_key
    cert = pki.cert_info(paths.host_crt)

    proof = check_ca_proof(bytes.fromhex(endpoint.member.ca_public_key), key,
                                    paths.identity_proof.read_bytes())
    assert (proof.name, proof.fingerprint, proof.expires_at) == ("node2", cert.fingerprint, cert.not_after)
    # Neither node needs a mesh secret: each trusts the other's key by the CA's word.
    member, holder = (mesh_trust(cfg_for(p.root.parent)) for p in (paths, endpoint.app.paths))
    assert member.proof(key) == paths.identity_proof.read_bytes() and holder.trusts(key, member.proof(key))
    lh = NodeIdentity.load_or_create(endpoint.app.paths.root.parent).public_key
    assert member.trusts(lh, holder.proof(lh)) and proof_kind(holder.proof(lh)) == "ca"


def test_a_joiner_that_sends_no_identity_key_gets_no_proof(endpoint, tmp_path):
    pki.keygen(tmp_path / "k", tmp_path / "k.pub")
    status, doc = endpoint.post({"token": token(endpoint), "name": "old", "public_key": (tmp_path / "k.pub").read_text()})

    assert status == 200 and "certificate" in doc and "identity_proof" not in doc
    assert "tls_certificate" not in doc


@pytest.mark.parametrize("key", ["A" * 42, "A" * 44, "A" * 42 + "B", "A" * 42 + "=", "+" * 43, 32, ["A" * 43]])
def test_an_identity_key_that_is_not_32_bytes_of_base64url_is_refused(endpoint, tmp_path, key):
    assert refused_join(endpoint, tmp_path, identity_key=key) == "bad_identity_key"


def refused_join(endpoint, tmp_path, **field) -> str:
    """The error code of a join that carries `field`; the address table must be untouched."""
    pki.keygen(tmp_path / "k", tmp_path / "k.pub")
    table = endpoint.app.paths.allocations.read_text()
    status, doc = endpoint.post({"token": token(endpoint), "name": "n2", "public_key": (tmp_path / "k.pub").read_text(),
                                 **field})
    assert status == 400
    assert endpoint.app.paths.allocations.read_text() == table
    return doc["error"]["code"]


def test_join_gets_a_mesh_tls_certificate_for_its_own_key(endpoint, tmp_path):
    bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint)))
    joiner = overlay.overlay_mode_credentials(tmp_path / "n2")
    holder = overlay.overlay_mode_credentials(endpoint.app.paths.root.parent)
    paths = NebulaPaths.of(tmp_path / "n2")

    assert joiner.trusted_ca_pem == holder.trusted_ca_pem and joiner.mesh_id == holder.mesh_id
    assert (joiner.spiffe_id, holder.spiffe_id) == (spiffe_id(joiner.mesh_id, "node2"), spiffe_id(joiner.mesh_id, "lh"))
    assert joiner.private_key_pem == (tmp_path / "n2" / NODE_KEY_FILE).read_bytes()
    assert joiner.not_after == pki.cert_info(paths.host_crt).not_after
    assert endpoint.app.paths.mesh_tls_ca_key.stat().st_mode & 0o777 == 0o600
    assert not paths.mesh_tls_ca_key.exists()


@pytest.mark.parametrize("key", ["garbage", 5, ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()])
def test_a_tls_public_key_that_is_no_p256_key_is_refused(endpoint, tmp_path, key):
    assert refused_join(endpoint, tmp_path, tls_public_key=key) == "bad_tls_public_key"


def test_a_tls_certificate_for_another_name_stops_the_joiner(endpoint, tmp_path, monkeypatch):
    real = holder.node_tls
    monkeypatch.setattr(holder, "node_tls",
                        lambda paths, request, cert, now: real(paths, replace(request, name="other"), cert, now))

    with pytest.raises(client.JoinError, match="mesh TLS certificate is unusable"):
        bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint)))
    assert not NebulaPaths.of(tmp_path / "n2").root.exists()


def test_a_proof_for_another_key_stops_the_joiner(endpoint, tmp_path, monkeypatch):
    real = holder.identity_proof
    monkeypatch.setattr(holder, "identity_proof",
                        lambda paths, request, cert: real(paths, replace(request, identity_key=b"k" * 32), cert))

    with pytest.raises(client.JoinError, match="proof of this node's identity key"):
        bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint)))
    assert not NebulaPaths.of(tmp_path / "n2").root.exists()


@pytest.mark.parametrize(("case", "message"), [("unknown", "unknown token"), ("expired", "expired at"),
                                               ("used_up", "used up")])
def test_bad_tokens_are_refused_with_the_reason_and_spend_nothing(endpoint, tmp_path, case, message):
    text = token(endpoint, ttl=60)
    if case == "used_up":
        bootstrap.join_mesh(tmp_path / "first", endpoint.join_options(text, name="first"))
    if case == "expired":
        endpoint.clock.offset = 61
    table = endpoint.app.paths.allocations.read_text()
    if case == "unknown":
        text = "0123abcd." + "0" * 32

    with pytest.raises(EnrollmentError, match=message):
        bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(text))
    assert endpoint.app.paths.allocations.read_text() == table
    assert not NebulaPaths.of(tmp_path / "n2").root.exists()


def test_a_different_ca_stops_the_joiner_before_it_sends_the_token(endpoint, tmp_path):
    with pytest.raises(client.JoinError, match="not the mesh the join command names"):
        bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint), ca_fingerprint="ab" * 32))
    assert endpoint.attempts() == 0


def test_a_different_tls_certificate_stops_the_joiner_before_any_request(endpoint, tmp_path):
    with pytest.raises(client.PinMismatch, match="nothing was sent"):
        bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint), tls_sha256="cd" * 32))
    assert endpoint.attempts() == 0


def test_a_key_that_is_not_a_nebula_public_key_is_refused(endpoint):
    status, doc = endpoint.post({"token": token(endpoint), "name": "n2",
                                 "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"})

    assert status == 400 and doc["error"]["code"] == "bad_public_key"


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", "x\\y", "", "a" * 64])
def test_names_with_path_characters_are_refused(endpoint, tmp_path, name):
    pki.keygen(tmp_path / "k", tmp_path / "k.pub")
    status, doc = endpoint.post({"token": token(endpoint), "name": name, "public_key": (tmp_path / "k.pub").read_text()})

    assert status == 400 and doc["error"]["code"] == "bad_name"


def test_the_lighthouse_group_needs_a_lighthouse_token(endpoint, tmp_path):
    asked = endpoint.join_options(token(endpoint), lighthouse=True, advertise=("10.77.0.12:4242",))
    with pytest.raises(EnrollmentError, match="does not admit lighthouses"):
        bootstrap.join_mesh(tmp_path / "n2", asked)
    status, doc = endpoint.post({"token": token(endpoint), "name": "n2", "public_key": "x", "groups": ["lighthouse"]})
    assert status == 400 and "groups come from the token" in doc["error"]["message"]

    allowed = endpoint.join_options(token(endpoint, lighthouse=True), lighthouse=True, advertise=("10.77.0.12:4242",))
    member = bootstrap.join_mesh(tmp_path / "n3", allowed)
    assert member.lighthouse and "lighthouse" in pki.cert_info(NebulaPaths.of(tmp_path / "n3").host_crt).groups
    record, _ = membership.load_record(endpoint.app.paths, endpoint.member)
    assert record.lighthouses[member.overlay_ip] == ["10.77.0.12:4242"] and record.serial == 2


def test_a_flood_of_join_attempts_is_rate_limited(endpoint):
    replies = [endpoint.post({"token": "x", "name": "n", "public_key": "x"}) for _ in range(15)]
    statuses = [status for status, _ in replies]

    assert statuses[:10] == [400] * 10 and set(statuses[10:]) == {429}
    assert "too many join attempts" in replies[-1][1]["error"]["message"]


def test_two_joins_at_the_same_moment_get_different_addresses(endpoint, tmp_path):
    text = token(endpoint, uses=2)
    with ThreadPoolExecutor(2) as pool:
        members = list(pool.map(lambda n: bootstrap.join_mesh(tmp_path / n, endpoint.join_options(text, name=n)),
                                ["n2", "n3"]))

    assert sorted(m.overlay_ip for m in members) == ["10.42.0.2", "10.42.0.3"]


def test_members_fetch_the_signed_record(endpoint, tmp_path):
    bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint, uses=2)))
    bootstrap.join_mesh(tmp_path / "n3", endpoint.join_options(token(endpoint), name="n3"))
    fingerprint, _ = holder.revoke(endpoint.app.paths, "n3", time.time())
    from services.nebula.agent.core import fetch_record
    record, signed = fetch_record(node.load(NebulaPaths.of(tmp_path / "n2")))

    assert fingerprint in record.blocklist and record.serial == 2
    assert records.verify(signed, endpoint.member.ca_public_key, endpoint.member.ca_fingerprint) == record


class NoSupervisor:
    def available(self) -> bool:
        return False


async def test_a_revoked_nodes_tls_certificate_is_refused_by_a_members_envoy_after_its_sync(endpoint, tmp_path):
    """`revoke` on the CA holder; a member's agent takes the next record at its sync, and its
    Envoy, given the CRL its credentials now carry, refuses the revoked node and no other."""
    text = token(endpoint, uses=2)
    for name in ("node-1", "node-2"):  # node-1 serves: the test's TLS client expects that name
        bootstrap.join_mesh(tmp_path / name, endpoint.join_options(text, name=name))
    agent = Agent(cfg_for(tmp_path / "node-1"), NoSupervisor())
    await agent.reconcile()
    assert overlay.overlay_mode_credentials(tmp_path / "node-1").revocation_list_pem == b""

    holder.revoke(endpoint.app.paths, "node-2", time.time())
    assert await agent.refresh_record()

    ours = overlay.overlay_mode_credentials(tmp_path / "node-1")
    files, revoked = (envoy_tls.write_credentials(overlay.overlay_mode_credentials(tmp_path / n), tmp_path / f"{n}-pem")
                      for n in ("node-1", "node-2"))
    crl = tmp_path / "mesh.crl"
    crl.write_bytes(ours.revocation_list_pem)
    peer_port, client_port = envoy_tls.free_port(), envoy_tls.free_port()
    config_file = tmp_path / "envoy.json"
    config_file.write_text(json.dumps(envoy_tls.bootstrap(files, ours.mesh_id, peer_port, client_port, crl)))
    with envoy_tls.running_envoy(config_file, [peer_port, client_port]):
        envoy_tls.assert_refused(peer_port, envoy_tls.tls_context(files.ca, revoked))
        assert envoy_tls.get(peer_port, envoy_tls.tls_context(files.ca, files)).startswith(b"HTTP/1.1 200")


def cfg_for(state_dir):
    return config.load({"MESHWORKER_STATE_DIR": str(state_dir), "MESHWORKER_RUNTIME_DIR": str(state_dir / "run")})


def run_cli(cfg, *argv) -> int:
    import argparse
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command"))
    return cli.run(cfg, parser.parse_args(argv))


def test_init_never_replaces_an_existing_ca(ca_paths, capsys):
    ca = ca_paths.ca_crt.read_text()

    assert run_cli(cfg_for(ca_paths.root.parent), "init", "--advertise", "127.0.0.1") == 1
    assert "already holds this mesh's CA" in capsys.readouterr().err
    assert ca_paths.ca_crt.read_text() == ca


def truncate(path) -> None:
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


@pytest.mark.parametrize("victim", ["mesh", "record", "ca_crt", "host_crt"])
def test_a_corrupt_state_file_stops_start_up_with_a_clear_error(ca_paths, victim):
    path = getattr(ca_paths, victim)
    truncate(path)

    with pytest.raises(StateError, match=f"{path}.*(corrupt|unusable)"):
        supervise.nebula_program(cfg_for(ca_paths.root.parent))


@pytest.mark.parametrize("victim", ["tokens", "allocations"])
def test_a_corrupt_authority_file_is_a_clear_error(ca_paths, capsys, victim):
    path = getattr(ca_paths, victim)
    truncate(path)

    assert run_cli(cfg_for(ca_paths.root.parent), "token") == (1 if victim == "tokens" else 0)
    if victim == "allocations":
        with pytest.raises(StateError, match=f"{path} is corrupt"):
            holder.revoke(ca_paths, "lh", time.time())
    else:
        assert f"{path} is corrupt" in capsys.readouterr().err


def test_the_record_endpoint_refuses_to_serve_a_corrupt_record(endpoint):
    endpoint.app.paths.record.write_text(json.dumps({"version": 1, "signed": {"body": "{}", "signature": "00"}}))

    status, doc = client.request(endpoint.address, endpoint.member.tls_sha256, "GET", "/v1/record")
    assert status == 503 and doc["error"]["code"] == "state_error"


def test_init_without_a_running_node_prints_the_join_command(tmp_path, capsys):
    cfg = cfg_for(tmp_path / "fresh")

    assert run_cli(cfg, "init", "--advertise", "192.0.2.7", "--token-uses", "2") == 0
    out = capsys.readouterr().out
    paths = NebulaPaths.of(cfg.state_dir)
    assert "meshworker join 192.0.2.7:4243 --token " in out and "2 uses" in out
    assert "The node is not running here" in out
    assert paths.ca_key.stat().st_mode & 0o777 == 0o600 and paths.authority.stat().st_mode & 0o777 == 0o700
    assert supervise.nebula_program(cfg).startswith("[program:nebula]")


def test_token_and_revoke_only_on_the_ca_holder(endpoint, tmp_path, capsys):
    bootstrap.join_mesh(tmp_path / "n2", endpoint.join_options(token(endpoint)))
    member = cfg_for(tmp_path / "n2")

    assert run_cli(member, "token") == 1 and run_cli(member, "revoke", "lh") == 1
    assert run_cli(cfg_for(endpoint.app.paths.root.parent), "revoke", "nobody") == 1
    err = capsys.readouterr().err
    assert "tokens are issued on the node that ran `meshworker init`" in err
    assert "no node named 'nobody'" in err
