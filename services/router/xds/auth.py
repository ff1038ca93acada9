"""Who may call /v1 and /service on the client listener, checked by Envoy on every request.

- jwt_authn verifies a key (services/common/keys.py) from `Authorization: Bearer` or
  `X-API-Key` against the keys in force, expiry included, and copies the key's name
  into x-mesh-key (a header no client can send: it is dropped before routing). On a
  `required` filter chain a request without a valid key is refused (401); on an
  `exempt` one (loopback clients, or client_auth = "open") a key is checked only to
  count it, and a request without one passes.
- local_ratelimit holds one token bucket per key with a limit of requests per minute:
  up to a minute's requests at once, then one more every 60/rpm s (429 past it, with
  Retry-After: the wait for the next token).
- rbac refuses (403) a key limited to some models any other model's route, and every
  /service route (whose backend could serve any model).
- A Lua filter reads OpenAI's `usage` from a keyed /v1 answer as its body passes, and the
  access log streams each keyed request to the router (gRPC ALS, after the response):
  its use is counted off the request path (services/router/usage.py).

/health, /metrics and the status page stay open: jwt_authn has no rule for them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

from services.common import errors
from services.common.keys import ISSUER, PREFIX, ApiKey, jwks
from services.gateway.bootstrap import XDS_CLUSTER  # the router's gRPC server: ADS, and the access log
from services.router.xds import routes
from services.router.xds.typed import LUA, typed
from services.router.xds.view import MeshView

JWT_FILTER = "envoy.filters.http.jwt_authn"
USAGE_FILTER = "meshworker.usage"
USAGE = "meshworker.usage"  # dynamic metadata: a keyed answer's prompt_tokens, completion_tokens
ACCESS_LOG = "api-keys"
RBAC_FILTER = "envoy.filters.http.rbac"
KEY = routes.KEY
PROVIDER = "mesh-keys"
JWT_CACHE_SIZE = 1024  # keys per worker thread (a mesh holds at most keybook.MAX_MESH_KEYS)
LUA_PER_ROUTE = "envoy.extensions.filters.http.lua.v3.LuaPerRoute"
GUARDED = ("/v1/", "/service/")
# Envoy's token buckets refill at most every 50 ms.
MIN_FILL_S = 0.05
UNLIMITED = {"max_tokens": 2**31, "tokens_per_fill": 2**31, "fill_interval": "1s"}
# Envoy refuses a key set with no key, and a mesh may have none yet: this one is always in
# it. Its 32 bytes are a hash, not a key somebody made, so nobody holds a private key for it.
NOBODY = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "nobody", "x": base64.urlsafe_b64encode(
    hashlib.sha256(b"meshworker: a verifying key that no private key matches").digest()).rstrip(b"=").decode()}


def key_filters(keys: tuple[ApiKey, ...], required: bool) -> list[dict[str, Any]]:
    """What a request passes first on the client listener: its key checked, then counted.
    A filter only where it has work (each costs every request some CPU): no key check
    where none is needed and none could pass, no buckets without a limited key."""
    return ([jwt_filter(keys, required)] if keys or required else []) + (
        [limit_filter(keys)] if limited(keys) else [])


def jwt_filter(keys: tuple[ApiKey, ...], required: bool) -> dict[str, Any]:
    requirement: dict[str, Any] = {"provider_name": PROVIDER} if required else {"requires_any": {
        "requirements": [{"provider_name": PROVIDER}, {"allow_missing_or_failed": {}}]}}
    provider = {
        "issuer": ISSUER, "local_jwks": {"inline_string": json.dumps(key_set(keys))},
        "from_headers": [{"name": "authorization", "value_prefix": f"Bearer {PREFIX}"},
                         {"name": "x-api-key", "value_prefix": PREFIX}],
        # Kept on the request, so a request Envoy sends through the routes again (the api's
        # redirect after a first lookup) shows its key again; no backend gets it (routes.forward).
        "forward": True,
        # The key's name decides its limits and model rules: the route is picked again with it.
        "claim_to_headers": [{"header_name": KEY, "claim_name": "sub"}], "clear_route_cache": True,
        "clock_skew_seconds": 5,  # an expired key stops within seconds of its time, not a minute after
        "payload_in_metadata": "key",  # the usage filter counts only what a key asked for
        # A key's signature is checked once per worker thread, not on every request (an
        # Ed25519 check costs more than the rest of the request); a new key set (a key
        # revoked) comes with a new filter and an empty cache, and a cached key still expires.
        "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_SIZE},
    }
    return {"name": JWT_FILTER, "typed_config": typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
            "providers": {PROVIDER: provider},
            "rules": [{"match": {"prefix": prefix}, "requires": requirement} for prefix in GUARDED]})}


def key_set(keys: tuple[ApiKey, ...]) -> dict[str, Any]:
    found = jwks(keys)
    return {"keys": [*found["keys"], NOBODY]}


def refill(key: ApiKey) -> tuple[float, int]:
    """(seconds between refills, tokens per refill) for a key's requests per minute."""
    every_s = max(MIN_FILL_S, 60 / key.requests_per_minute)
    return every_s, max(1, round(key.requests_per_minute * every_s / 60))


def limited(keys: tuple[ApiKey, ...]) -> list[ApiKey]:
    return [k for k in keys if k.requests_per_minute]


def limit_filter(keys: tuple[ApiKey, ...]) -> dict[str, Any]:
    descriptors = []
    for key in limited(keys):
        every_s, tokens = refill(key)
        descriptors.append({"entries": [{"key": "key", "value": key.name}], "token_bucket": {
            "max_tokens": key.requests_per_minute, "tokens_per_fill": tokens, "fill_interval": f"{every_s:.3f}s"}})
    return {"name": routes.LIMIT_FILTER, "typed_config": typed(
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
            "stat_prefix": "api_keys", "token_bucket": UNLIMITED,
            "filter_enabled": {"default_value": {"numerator": 100}, "runtime_key": "meshworker.keys.enabled"},
            "filter_enforced": {"default_value": {"numerator": 100}, "runtime_key": "meshworker.keys.enforced"},
            "descriptors": descriptors,
            "rate_limits": [{"actions": [{"request_headers": {
                "header_name": KEY, "descriptor_key": "key", "skip_if_absent": True}}]}]})}


# Envoy's own answers about keys (listeners.py puts them in our shape or OpenAI's).
UNAUTHORIZED = (401, "invalid_api_key", ("this endpoint needs an API key of the mesh, sent as 'Authorization: "
                "Bearer <key>' or 'X-API-Key: <key>' (meshworker keys create): %LOCAL_REPLY_BODY%"))
FORBIDDEN = (403, "model_not_allowed", "this API key may not use this model or service")


def over_limit(name: str) -> tuple[int, str, str]:
    """Its own token bucket's answer, and the one past its minute's use across the mesh."""
    return 429, "rate_limit_exceeded", f"API key {name!r} is over its limit of requests or tokens per minute"


def over_limit_routes(view: MeshView) -> list[dict[str, Any]]:
    """A key past a limit this minute, mesh-wide (services/router/limits.py): refused before
    any other route, with the seconds left in the minute."""
    found = []
    for name, wait in view.blocked:
        _, _, message = over_limit(name)
        key, retry = {"name": KEY, "string_match": {"exact": name}}, routes.header("retry-after", str(wait))
        found += [{"name": f"{name} over its limit", "match": {"prefix": prefix, "headers": [key]},
                   **routes.answer(429, shape, retry)}
                  for prefix, shape in (("/v1/", errors.openai(429, "rate_limit_exceeded", message)),
                                        ("/", errors.ours("rate_limit_exceeded", message)))]
    return found


def retry_after(keys: tuple[ApiKey, ...]) -> list[tuple[str, int]]:
    """(key name, seconds until its bucket holds a token again) for each limited key."""
    return [(k.name, math.ceil(refill(k)[0])) for k in limited(keys)]


def rbac_filters(keys: tuple[ApiKey, ...]) -> list[dict[str, Any]]:
    """A key limited to models may not call /service routes (model routes: model_rule);
    none without such a key."""
    restricted = [k.name for k in keys if k.models]
    if not restricted:
        return []
    rules = {"action": "DENY", "policies": {"models only": {
        "permissions": [{"url_path": {"path": {"prefix": "/service/"}}}], "principals": [named(restricted)]}}}
    return [{"name": RBAC_FILTER, "typed_config": typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                                                        {"rules": rules})}]


def model_rule(keys: tuple[ApiKey, ...], names: tuple[str, ...]) -> dict[str, Any]:
    """A model route's rule: keys limited to other models are refused (403). `names`: the
    model's id and the aliases it is known by. {} when every key may use it."""
    refused = [k.name for k in keys if not k.allows(names)]
    if not refused:
        return {}
    return {RBAC_FILTER: typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute", {"rbac": {"rules": {
        "action": "DENY", "policies": {"other models": {"permissions": [{"any": True}],
                                                        "principals": [named(refused)]}}}}})}


def named(names: list[str]) -> dict[str, Any]:
    """A principal: the request's key is one of `names`."""
    return {"or_ids": {"ids": [{"header": {"name": KEY, "string_match": {"exact": n}}} for n in names]}}


# The body is read chunk by chunk as it passes, never held: a JSON answer's `usage`, or a
# stream's (its last event, when the client asked for it with stream_options). A count
# inside a string would be escaped (\"prompt_tokens\"), so it does not match. It names
# JWT_FILTER's and USAGE's metadata.
USAGE_CODE = """
function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata()
  if meta:get("envoy.filters.http.jwt_authn") == nil then
    return
  end
  local prompt, completion
  for chunk in handle:bodyChunks() do
    local text = chunk:getBytes(0, chunk:length())
    for n in string.gmatch(text, '"prompt_tokens"%s*:%s*(%d+)') do prompt = n end
    for n in string.gmatch(text, '"completion_tokens"%s*:%s*(%d+)') do completion = n end
  end
  meta = handle:streamInfo():dynamicMetadata()  -- the one from before the loop is gone once it yielded
  if prompt then meta:set("meshworker.usage", "prompt_tokens", tonumber(prompt)) end
  if completion then meta:set("meshworker.usage", "completion_tokens", tonumber(completion)) end
end
"""


def usage_filter() -> dict[str, Any]:
    """Off unless a route turns it on (usage_read): a /v1 POST's first route turns it on,
    and its model's route gives it its code (Envoy reads the code from the route a
    request ends on)."""
    return {"name": USAGE_FILTER, "disabled": True, "typed_config": typed(LUA, {})}


def usage_read() -> dict[str, Any]:
    return {USAGE_FILTER: typed(LUA_PER_ROUTE, {"source_code": {"inline_string": USAGE_CODE}})}


def access_log(keys: tuple[ApiKey, ...]) -> list[dict[str, Any]]:
    """Each request that carried a verified key, to the router once it is answered (none
    while the mesh has no key)."""
    return [] if not keys else [{"name": "envoy.access_loggers.http_grpc",
             "filter": {"header_filter": {"header": {"name": KEY, "present_match": True}}},
             "typed_config": typed("envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig", {
                 "common_config": {"log_name": ACCESS_LOG, "transport_api_version": "V3",
                                   "grpc_service": {"envoy_grpc": {"cluster_name": XDS_CLUSTER}},
                                   "buffer_flush_interval": "0.1s"},
                 "additional_request_headers_to_log": [KEY]})}]

