"""What the dht's unit tests share besides fixtures (those are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import umsgpack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kademlia.utils import digest

from services.dht import records
from services.dht.node import DhtNode, Signer
from services.identity.node_key import NodeIdentity
from services.identity.proofs import MESH_RECORD_CONTEXT, sign_ca_proof
from services.identity.trust import (
    CA_PROOF_FILE,
    MESH_FILE,
    OVERLAY_DIR,
    RECORD_FILE,
    MeshTrust,
    OverlayTrust,
)

SECRET = "m" * 32
OTHER_SECRET = "o" * 32


def url_of(dht: DhtNode) -> str:
    """The URL a test node's records say (the router chooses it in a real node)."""
    return f"http://{dht.worker_id}:8000"


def seed(dht: DhtNode) -> tuple[tuple[str, int]]:
    """The seeds that make a new node join `dht`."""
    return (("127.0.0.1", dht.port),)


def plant(dht: DhtNode, signer: Signer, worker_id: str, service: str = "svc") -> None:
    """Store a record straight into one node's storage, as if only it had received the STORE."""
    record = records.new_record(service, worker_id, f"http://{worker_id}:8000", 60, time.time())
    dht.storage[digest(records.service_key(service))] = records.encode(
        {worker_id: records.sign(record, signer.identity, signer.proof)})


class RawPeer:
    """A bare UDP socket on loopback that speaks rpcudp's wire format (kademlia's): what
    anyone's own code can send a node, with the bytes counted both ways."""

    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.sent = self.received = 0

    def request(self, address: tuple[str, int], name: str, *args: object) -> None:
        datagram = b"\x00" + os.urandom(20) + umsgpack.packb([name, list(args)])
        self.sock.sendto(datagram, address)
        self.sent += len(datagram)

    async def ask(self, address: tuple[str, int], name: str, *args: object) -> object:
        """One request and the decoded answer (the node answers loopback within the timeout)."""
        self.request(address, name, *args)
        [answer] = await self.receive(1, quiet_s=2.0)
        return answer

    async def receive(self, most: int, quiet_s: float = 0.3) -> list[object]:
        """The decoded answers (and unasked requests) that arrive until `most` have, or none has
        for quiet_s."""
        loop = asyncio.get_running_loop()
        answers: list[object] = []
        while len(answers) < most:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), quiet_s)
            except TimeoutError:
                break
            self.received += len(data)
            answers.append(umsgpack.unpackb(data[21:]))
        return answers

    def close(self) -> None:
        self.sock.close()


class MeshCa:
    """The overlay's CA holder as `init` and `join` act for it: it writes a node's membership
    (the CA key), the CA-signed record (blocklist) and the CA's proof of the node's key."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public = self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)

    @staticmethod
    def fingerprint(name: str) -> str:
        return name.encode().hex().ljust(64, "0")

    def enroll(self, state_dir: Path, name: str, overlay_ip: str = "10.42.0.9") -> None:
        root = state_dir / OVERLAY_DIR
        root.mkdir(parents=True, exist_ok=True)
        (root / MESH_FILE).write_text(json.dumps({"ca_public_key": self.public.hex(),
                                                           "ca_fingerprint": "ca", "overlay_ip": overlay_ip}))
        self.publish(state_dir)
        key = NodeIdentity.load_or_create(state_dir).public_key
        (root / CA_PROOF_FILE).write_bytes(
            sign_ca_proof(self.key, key, name, self.fingerprint(name), int(time.time()) + 3600))

    def publish(self, state_dir: Path, blocked: tuple[str, ...] = ()) -> None:
        body = json.dumps({"ca_fingerprint": "ca", "blocklist": [self.fingerprint(n) for n in blocked]})
        signature = self.key.sign(MESH_RECORD_CONTEXT + body.encode()).hex()
        (state_dir / OVERLAY_DIR / RECORD_FILE).write_text(
            json.dumps({"signed": {"body": body, "signature": signature}}))

    @staticmethod
    def signer(state_dir: Path, secret: str | None = None) -> Signer:
        return Signer(NodeIdentity.load_or_create(state_dir), MeshTrust(secret, OverlayTrust(state_dir)))
