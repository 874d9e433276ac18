"""A client for the OCI distribution API: pull and push Wasm component artifacts.

Hand-written over httpx rather than the `oras` SDK (the reasons are in
docs/artifacts.md: oras-py 0.2 is synchronous on `requests`, writes pulls to files,
takes one insecure flag per client instead of per registry, and does not check a
downloaded blob against its digest — all things a host needs the other way round).
The protocol surface we use is small: manifests (GET/HEAD/PUT), blobs (GET/HEAD,
monolithic POST+PUT upload), and the two auth challenges registries send (`Basic`,
and `Bearer` with a token endpoint).

Every pulled blob and manifest is checked against its digest. Registries are spoken to
over HTTPS unless named in `insecure` (`--allow-insecure-registry HOST`). Credentials
are held in `Credentials`, whose repr hides the secret, and never reach a log line or
an error message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from lattice.artifacts import layout
from lattice.artifacts.refs import OciRef, RefError, sha256_digest
from lattice.artifacts.wasm import World, check_component, world

log = structlog.get_logger("lattice.artifacts.oci")

MAX_BLOB_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class OciError(RefError):
    """The registry could not be used or refused; `unreachable` says it did not answer."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret={'***' if self.secret else None})"

    @property
    def secret(self) -> str | None:
        return self.password or self.token

    @classmethod
    def from_config(cls, values: dict[str, str]) -> Credentials:
        """From a named config's keys `username`, `password` and/or `token`."""
        return cls(values.get("username"), values.get("password"), values.get("token"))


@dataclass(frozen=True)
class Pulled:
    ref: OciRef
    manifest_digest: str
    layer: layout.Descriptor
    config: dict[str, Any]
    data: bytes


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


class OciClient:
    """One registry conversation per call; bearer tokens are kept per (registry, scope)."""

    def __init__(
        self,
        *,
        insecure: frozenset[str] | set[str] = frozenset(),
        credentials: dict[str, Credentials] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.insecure = frozenset(insecure)
        self.credentials = dict(credentials or {})
        self.timeout = timeout
        # Authorization headers learned from a challenge, sent up front afterwards (a
        # large upload must not be sent once just to be told 401): per (registry, scope)
        # for bearer tokens, per (registry, "*") for basic auth.
        self._auth: dict[tuple[str, str], str] = {}

    def _base(self, registry: str) -> str:
        scheme = "http" if registry in self.insecure else "https"
        return f"{scheme}://{registry}/v2"

    # -- requests with auth -------------------------------------------------------

    async def _request(
        self,
        client: httpx.AsyncClient,
        ref: OciRef,
        method: str,
        url: str,
        *,
        push: bool = False,
        **kw: Any,
    ) -> httpx.Response:
        scope = f"repository:{ref.repository}:{'pull,push' if push else 'pull'}"
        headers = dict(kw.pop("headers", {}) or {})
        known = self._auth.get((ref.registry, scope)) or self._auth.get((ref.registry, "*"))
        if known:
            headers["Authorization"] = known
        try:
            resp = await client.request(method, url, headers=headers, **kw)
            if resp.status_code == 401:
                auth = await self._authorize(client, ref, resp, scope)
                if auth is not None:
                    headers["Authorization"] = auth
                    resp = await client.request(method, url, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise OciError(
                f"registry {ref.registry} did not answer ({type(exc).__name__}: {exc})"
                + (
                    "; is it plain HTTP? then pass --allow-insecure-registry " + ref.registry
                    if ref.registry not in self.insecure and "SSL" in str(exc)
                    else ""
                ),
                unreachable=True,
            ) from None
        if resp.status_code == 401:
            has = ref.registry in self.credentials
            raise OciError(
                f"registry {ref.registry} refused access to {ref.repository} (401)"
                + ("; check the credentials in its named config" if has else "; no credentials")
            )
        if resp.status_code == 403:
            raise OciError(f"registry {ref.registry} forbids this on {ref.repository} (403)")
        return resp

    async def _authorize(
        self, client: httpx.AsyncClient, ref: OciRef, resp: httpx.Response, scope: str
    ) -> str | None:
        scheme, params = parse_challenge(resp.headers.get("www-authenticate", ""))
        creds = self.credentials.get(ref.registry)
        if scheme == "basic":
            if creds is None or creds.secret is None:
                return None
            header = httpx.BasicAuth(creds.username or "", creds.secret)._auth_header
            self._auth[(ref.registry, "*")] = header
            return header
        if scheme != "bearer" or "realm" not in params:
            return None
        query = {"service": params.get("service", ""), "scope": params.get("scope") or scope}
        auth = (
            httpx.BasicAuth(creds.username or "", creds.secret)
            if creds is not None and creds.secret is not None and creds.username
            else None
        )
        if creds is not None and creds.token and not creds.username:
            token = creds.token  # a registry token given as is
        else:
            tr = await client.get(params["realm"], params=query, auth=auth)
            if tr.status_code != 200:
                raise OciError(
                    f"registry {ref.registry}: its token service answered {tr.status_code}"
                )
            body = tr.json()
            token = body.get("token") or body.get("access_token") or ""
            if not token:
                raise OciError(f"registry {ref.registry}: its token service sent no token")
        self._auth[(ref.registry, scope)] = f"Bearer {token}"
        return f"Bearer {token}"

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=True)

    @staticmethod
    def _check_status(resp: httpx.Response, ref: OciRef, what: str, *ok: int) -> None:
        if resp.status_code in ok:
            return
        detail = ""
        try:
            errors = resp.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except Exception:
            detail = resp.text[:200]
        if resp.status_code == 404:
            raise OciError(f"{ref}: {what} not found in registry {ref.registry}")
        raise OciError(f"{ref}: {what} failed with HTTP {resp.status_code} {detail}".rstrip())

    # -- pull -----------------------------------------------------------------------

    async def resolve(self, ref: OciRef) -> str:
        """The manifest digest `ref` names now (HEAD, no body)."""
        url = f"{self._base(ref.registry)}/{ref.repository}/manifests/{ref.reference}"
        async with self._client() as client:
            resp = await self._request(
                client, ref, "HEAD", url, headers={"Accept": layout.ACCEPT_HEADER}
            )
        self._check_status(resp, ref, "manifest", 200)
        digest = resp.headers.get("docker-content-digest")
        if not digest:  # some registries leave it out on HEAD: fetch and hash
            _, _, digest = await self._manifest(ref)
        return digest

    async def _manifest(self, ref: OciRef) -> tuple[bytes, str, str]:
        url = f"{self._base(ref.registry)}/{ref.repository}/manifests/{ref.reference}"
        async with self._client() as client:
            resp = await self._request(
                client, ref, "GET", url, headers={"Accept": layout.ACCEPT_HEADER}
            )
        self._check_status(resp, ref, "manifest", 200)
        body = resp.content
        if len(body) > MAX_MANIFEST_BYTES:
            raise OciError(f"{ref}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        digest = sha256_digest(body)
        if ref.digest and digest != ref.digest:
            raise OciError(f"{ref}: the registry sent a manifest with digest {digest}")
        return body, resp.headers.get("content-type", ""), digest

    async def pull_manifest(self, ref: OciRef) -> tuple[str, layout.Descriptor, dict[str, Any]]:
        """(manifest digest, the component layer, the config) — no layer bytes."""
        body, content_type, digest = await self._manifest(ref)
        layer = layout.component_layer(body, content_type, str(ref))
        config: dict[str, Any] = {}
        try:
            desc = layout.descriptor(json.loads(body).get("config"), "config")
            if desc.size <= MAX_MANIFEST_BYTES:
                config = layout.read_config(await self.blob(ref, desc.digest))
        except (RefError, AttributeError):
            config = {}
        return digest, layer, config

    async def blob(self, ref: OciRef, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        """The blob `digest` of `ref`'s repository, checked against its digest."""
        url = f"{self._base(ref.registry)}/{ref.repository}/blobs/{digest}"
        async with self._client() as client:
            resp = await self._request(client, ref, "GET", url)
            self._check_status(resp, ref, f"blob {digest}", 200)
            data = resp.content
        if len(data) > limit:
            raise OciError(f"{ref}: blob {digest} is larger than {limit} bytes")
        got = sha256_digest(data)
        if got != digest:
            raise OciError(f"{ref}: blob {digest} arrived with digest {got}; refused")
        return data

    async def pull(self, ref: OciRef) -> Pulled:
        digest, layer, config = await self.pull_manifest(ref)
        data = await self.blob(ref, layer.digest)
        check_component(data, str(ref))
        return Pulled(ref.with_digest(digest), digest, layer, config, data)

    # -- push -----------------------------------------------------------------------

    async def _push_blob(
        self, client: httpx.AsyncClient, ref: OciRef, digest: str, data: bytes
    ) -> None:
        base = f"{self._base(ref.registry)}/{ref.repository}"
        head = await self._request(client, ref, "HEAD", f"{base}/blobs/{digest}", push=True)
        if head.status_code == 200:
            return
        start = await self._request(client, ref, "POST", f"{base}/blobs/uploads/", push=True)
        self._check_status(start, ref, "blob upload", 202)
        location = start.headers.get("location", "")
        if not location:
            raise OciError(f"{ref}: the registry gave no upload location")
        url = httpx.URL(base).join(location) if location.startswith("/") else httpx.URL(location)
        put = await self._request(
            client,
            ref,
            "PUT",
            str(url.copy_merge_params({"digest": digest})),
            push=True,
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check_status(put, ref, f"blob {digest} upload", 201)

    async def push(
        self, ref: OciRef, wasm: bytes, annotations: dict[str, str] | None = None
    ) -> tuple[str, World]:
        """Push `wasm` as a CNCF Wasm artifact at `ref`'s tag; returns the manifest digest."""
        check_component(wasm, str(ref))
        if ref.tag is None:
            raise OciError(f"{ref}: push needs a tag (registry/repo:tag)")
        w = world(wasm)
        art = layout.build(wasm, w, annotations)
        async with self._client() as client:
            await self._push_blob(client, ref, art.config_descriptor.digest, art.config)
            await self._push_blob(client, ref, art.layer.digest, wasm)
            url = f"{self._base(ref.registry)}/{ref.repository}/manifests/{ref.tag}"
            resp = await self._request(
                client,
                ref,
                "PUT",
                url,
                push=True,
                content=art.manifest,
                headers={"Content-Type": layout.MANIFEST_MEDIA_TYPE},
            )
            self._check_status(resp, ref, "manifest upload", 201)
        log.info("pushed", ref=str(ref), digest=art.manifest_digest, size=len(wasm))
        return art.manifest_digest, w
