"""The client side of enrollment: an HTTPS connection pinned by certificate hash.

Blocking (http.client), with a timeout on every connection: used by the `join` command
and, from a worker thread, by nebula-agent's record sync. The pin is checked right after
the TLS handshake, before any request is written.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from services.nebula.authority import tls

TIMEOUT_S = 10.0
MAX_REPLY_BYTES = 256 * 1024


class JoinError(RuntimeError):
    """The join cannot go on; the message says why, in words for the person joining."""


class PinMismatch(JoinError):
    pass


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise JoinError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def _client_context() -> ssl.SSLContext:
    # No CA can vouch for a self-signed certificate: verification is the pin, checked below.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def request(address: str, tls_sha256: str, method: str, path: str, body: Any = None,
            timeout: float = TIMEOUT_S) -> tuple[int, Any]:
    """(status, decoded JSON) from the endpoint at address, whose certificate must match the pin."""
    host, port = split_address(address)
    conn = http.client.HTTPSConnection(host, port, context=_client_context(), timeout=timeout)
    try:
        conn.connect()
        presented = tls.pin_of_der(conn.sock.getpeercert(binary_form=True))
        if presented != tls_sha256.lower():
            raise PinMismatch(f"{address} presented a TLS certificate with SHA-256 {presented}, not "
                              f"the pinned {tls_sha256}: not the lighthouse the join command names; "
                              "nothing was sent")
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read(MAX_REPLY_BYTES)
        return reply.status, json.loads(data) if data else None
    except (OSError, http.client.HTTPException) as err:
        raise JoinError(f"cannot reach the enrollment endpoint at {address}: {err}") from None
    except ValueError:
        raise JoinError(f"{address} answered something that is not JSON") from None
    finally:
        conn.close()


def refusal(status: int, doc: Any) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return f"{doc['error'].get('message')} ({doc['error'].get('code')}, HTTP {status})"
    return f"HTTP {status}"


def first_answering(addresses: list[str], tls_sha256: str, method: str, path: str,
                    body: Any = None) -> tuple[str, int, Any]:
    """Try each address in turn; a pin mismatch stops at once (it is not a network fault)."""
    failures = []
    for address in addresses:
        try:
            status, doc = request(address, tls_sha256, method, path, body)
            return address, status, doc
        except PinMismatch:
            raise
        except JoinError as err:
            failures.append(str(err))
    raise JoinError("; ".join(failures) or "no enrollment address given")
