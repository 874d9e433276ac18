"""Outgoing HTTP for components: denied unless the component's policy allows the host.

A component may call out only to hosts its capability policy lists under `egress`
(lattice/policy.py), or, with no such list, those its named config lists under
`allowed_hosts` (comma-separated: `api.example.com`, `127.0.0.1:8080`, `*.example.com`,
or `*` for any). Both are read on every request, so `lattice config put` takes effect
at once. Everything else gets `HTTP-request-denied`, which is also the answer when
neither is set — outgoing HTTP is off by default.

The request is sent with httpx on the worker thread that runs the component (inside the
state's `blocking()` section, so the pool can add a worker meanwhile); its response body
is read whole, up to `MAX_RESPONSE_BYTES`, and handed to the guest as a ready future.
When the component's `outgoing-handler` import is linked to a provider instead, the
request goes there with streamed bodies (`host.wasi.outgoing_link`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
from wasmtime.component import Variant

from host.wasi.io import ByteSource
from lattice import policy as capability
from lattice.protocol import http_out

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0

OutgoingPolicy = http_out.OutgoingPolicy
allowlist = http_out.allowlist  # the one pattern language, shared with builtin://http-client


def from_config(config: Callable[[], Mapping[str, str]]) -> OutgoingPolicy:
    """The policy of a component whose served config `config()` returns (read per call):
    its capability policy's `egress` when set, else its `allowed_hosts`."""

    def allowed(host: str, port: int) -> bool:
        return capability.may_reach(config(), host, port)

    return allowed


def policy_egress(config: Callable[[], Mapping[str, str]]) -> OutgoingPolicy:
    """What the component's capability policy's `egress` allows (everything when it sets
    none): the bound on requests sent through a linked http-client provider, whose own
    `allowed_hosts` (on the link) applies as well."""

    def allowed(host: str, port: int) -> bool:
        found = getattr(config(), "policy", None)
        return found is None or found.egress is None or found.may_reach(host, port, {})

    return allowed


@dataclass
class Response:
    status: int
    headers: list[tuple[str, bytes]]
    body: bytes | ByteSource  # a source (a `Pipe`) when it streams in from a provider


def send(
    method: str,
    url: str,
    headers: list[tuple[str, bytes]],
    body: bytes,
    timeout: float,
) -> Response | Variant:
    """Perform the request; a WASI `error-code` variant when it fails."""
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False) as client,
            client.stream(method, url, headers=headers, content=body or None) as resp,
        ):
            chunks, size = [], 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    return Variant("HTTP-response-body-size", size)
                chunks.append(chunk)
            return Response(
                resp.status_code,
                [(k.lower(), v.encode("latin-1")) for k, v in resp.headers.items()],
                b"".join(chunks),
            )
    except httpx.ConnectTimeout:
        return Variant("connection-timeout")
    except httpx.ConnectError as exc:
        text = str(exc).lower()
        if "name or service" in text or "nodename" in text or "resolve" in text:
            return Variant("internal-error", f"DNS lookup failed: {exc}")
        return Variant("connection-refused")
    except httpx.TimeoutException:
        return Variant("connection-read-timeout")
    except httpx.InvalidURL:
        return Variant("HTTP-request-URI-invalid")
    except httpx.HTTPError as exc:
        return Variant("internal-error", f"{type(exc).__name__}: {exc}")
