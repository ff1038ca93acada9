"""The enrollment endpoint the CA holder's nebula-agent serves on the underlay, over HTTPS.

Joiners have no overlay yet, so this listens on the underlay. The channel is TLS with a
self-signed certificate that the joiner pins by SHA-256; the joiner also checks the Nebula
CA's fingerprint from GET /v1/ca before it sends its token. POST /v1/join takes only
public keys, the token and a name; private keys never cross the network. With the joiner's
identity key (ed25519, base64url) the reply carries the CA's proof of that key
("identity_proof", base64url; see services.identity.proofs.CaProof), which makes the
joiner's provider records and forwarded requests trusted by every member. With its TLS
public key (P-256, PEM) the reply carries its certificate of the mesh TLS CA and that CA's
certificate ("tls_certificate", "tls_ca"; see services.identity.overlay), for Envoy's mTLS.

  GET  /v1/ca      {"ca": PEM, "ca_fingerprint": hex}
  GET  /v1/record  {"record": signed mesh record}         (members poll this)
  POST /v1/join    {"token", "name", "public_key"[, "identity_key", "tls_public_key", "lighthouse",
                    "advertise"]}
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from services.nebula.authority import holder
from services.nebula.authority.ratelimit import JoinRateLimiter
from services.nebula.overlay import membership
from services.nebula.overlay.state import EnrollmentError, NebulaPaths, StateError

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 16 * 1024


def error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


class EnrollmentApp:
    def __init__(self, paths: NebulaPaths, registry: CollectorRegistry | None = None,
                 limiter: JoinRateLimiter | None = None, clock: Callable[[], float] = time.time,
                 on_record_change: Callable[[], None] | None = None):
        self.paths, self.clock = paths, clock
        self.limiter = limiter or JoinRateLimiter(clock=clock)
        self.on_record_change = on_record_change or (lambda: None)
        self.signer = holder.nebula_cert_signer(paths)
        self.outcomes = Counter("meshworker_nebula_join_attempts", "Join requests to this lighthouse "
                                "by result", ["result"], registry=registry or CollectorRegistry())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([web.get("/v1/ca", self.ca), web.get("/v1/record", self.record),
                        web.post("/v1/join", self.join)])
        return app

    async def ca(self, request: web.Request) -> web.Response:
        member = membership.load(self.paths)
        return web.json_response({"ca": self.paths.ca_crt.read_text(),
                                  "ca_fingerprint": member.ca_fingerprint})

    async def record(self, request: web.Request) -> web.Response:
        try:
            _, signed = membership.load_record(self.paths, membership.load(self.paths))
        except StateError as err:
            log.error("cannot serve the mesh record: %s", err)
            return error("state_error", "the lighthouse's mesh record is unusable", 503)
        return web.json_response({"record": signed})

    async def join(self, request: web.Request) -> web.Response:
        wait = self.limiter.check(request.remote or "?")
        if wait:
            self.outcomes.labels("rate_limited").inc()
            log.warning("join attempt from %s refused: rate limited", request.remote)
            return error("rate_limited", f"too many join attempts; retry in {wait:.0f} s", 429,
                         {"Retry-After": str(max(1, round(wait)))})
        try:
            reply = await self._enroll(await request.read())
        except EnrollmentError as err:
            self.outcomes.labels(err.code).inc()
            log.warning("join attempt from %s refused: %s", request.remote, err)
            return error(err.code, str(err), err.status)
        except (StateError, RuntimeError) as err:
            self.outcomes.labels("error").inc()
            log.error("join attempt from %s failed: %s", request.remote, err)
            return error("lighthouse_error", "the lighthouse could not enroll you; its log says why", 500)
        self.outcomes.labels("enrolled").inc()
        return web.json_response(reply)

    async def _enroll(self, body: bytes) -> dict:
        try:
            doc = json.loads(body)
        except ValueError:
            raise EnrollmentError("bad_request", "the body is not JSON") from None
        join = holder.parse_join_request(doc)
        # Locking, nebula-cert and fsync block: keep them off the event loop.
        reply = await asyncio.to_thread(holder.enroll, self.paths, join, self.clock(), self.signer)
        if join.lighthouse:
            self.on_record_change()
        return reply


def server_ssl_context(paths: NebulaPaths) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(paths.tls_crt, paths.tls_key)
    return context


async def start(app: EnrollmentApp, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=server_ssl_context(app.paths), reuse_address=True)
    await site.start()
    log.info("enrollment endpoint listening on https://%s:%d", host, port)
    return runner
