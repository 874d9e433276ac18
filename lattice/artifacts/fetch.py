"""Reference → verified component bytes, through the local cache first.

The order for each kind of reference:

- `lattice://NAME:VERSION`: ask the lattice store for the object's info (its digest);
  use the local cache when it holds that digest, else download and check it. When the
  store does not answer or no longer has the object, start from the digest this
  reference resolved to last time, if the cache holds it.
- OCI, pinned (`@sha256:…`): the cache, with no registry round trip at all; else pull.
- OCI, tag: resolve the tag (HEAD); cached layer for that manifest → no download. With
  the registry down, the digest the tag resolved to last time.
- `file://`, paths, `http(s)://`: read or download (nothing to resolve).

Every result says where its bytes came from (`source`), so a host can log that it
started from cache while its registry was away.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import structlog
from nats.aio.client import Client as NATS

from lattice.artifacts import claims, refs
from lattice.artifacts.cache import LocalCache
from lattice.artifacts.claims import ClaimsError
from lattice.artifacts.oci import Credentials, OciClient, OciError
from lattice.artifacts.refs import RefError, sha256_digest
from lattice.artifacts.store import ArtifactStore, StoreError
from lattice.artifacts.wasm import NotAComponent, check_component

log = structlog.get_logger("lattice.artifacts.fetch")

MAX_ARTIFACT_BYTES = 512 * 1024 * 1024
STORE_TIMEOUT = 60.0


class FetchError(ValueError):
    """The reference cannot be fetched or does not hold a component; meant for the user."""


@dataclass(frozen=True)
class Fetched:
    ref: str
    data: bytes
    digest: str
    source: str  # "file", "http", "lattice", "oci", "cache", "cache-offline"


@dataclass(frozen=True)
class FetchPolicy:
    allow_latest: bool = False
    insecure_registries: frozenset[str] = frozenset()
    allowed_issuers: frozenset[str] = frozenset()
    """Non-empty: only components signed by one of these accounts (claims.verify)."""


CredentialsFor = Callable[[str], Credentials | None]


class Fetcher:
    def __init__(
        self,
        cache: LocalCache | None = None,
        *,
        nc: NATS | None = None,
        lattice: str | None = None,
        policy: FetchPolicy | None = None,
        credentials: CredentialsFor | None = None,
        http_timeout: float = 60.0,
    ) -> None:
        self.cache = cache
        self.policy = policy or FetchPolicy()
        self.store = ArtifactStore(nc, lattice) if nc is not None and lattice else None
        self.credentials = credentials or (lambda _registry: None)
        self.http_timeout = http_timeout
        self.sources: collections.Counter[str] = collections.Counter()  # fetches per source

    async def fetch(self, ref: str) -> Fetched:
        try:
            parsed = refs.parse(ref, allow_latest=self.policy.allow_latest)
            if isinstance(parsed, refs.LatticeRef):
                got = await self._lattice(ref, parsed)
            elif isinstance(parsed, refs.OciRef):
                got = await self._oci(ref, parsed)
            elif isinstance(parsed, refs.HttpRef):
                data = await _download(ref, self.http_timeout)
                got = Fetched(ref, data, sha256_digest(data), "http")
            else:
                data = await _read_file(ref)
                got = Fetched(ref, data, sha256_digest(data), "file")
            check_component(got.data, ref)
            if self.policy.allowed_issuers:  # before anything compiles it
                await asyncio.to_thread(claims.verify, got.data, self.policy.allowed_issuers)
        except ClaimsError as exc:
            raise FetchError(f"{ref} refused: {exc}") from None
        except (RefError, NotAComponent) as exc:
            raise FetchError(str(exc)) from None
        self.sources[got.source] += 1
        return got

    def _cached(self, ref: str, digest: str | None, source: str) -> Fetched | None:
        if self.cache is None or digest is None:
            return None
        data = self.cache.get(digest)
        return Fetched(ref, data, digest, source) if data is not None else None

    def _offline(self, ref: str, key: str, why: str) -> Fetched:
        got = self._cached(ref, self.cache.remembered(key) if self.cache else None, "cache-offline")
        if got is None:
            raise FetchError(why)
        log.warning("started from the local cache", ref=ref, digest=got.digest, reason=why)
        return got

    async def _lattice(self, ref: str, parsed: refs.LatticeRef) -> Fetched:
        key = str(parsed)
        if self.store is None:
            return self._offline(ref, key, f"{ref}: this process is not connected to a lattice")
        try:
            info = await asyncio.wait_for(self.store.info(parsed), STORE_TIMEOUT)
        except (TimeoutError, Exception) as exc:  # NATS gone or JetStream not answering
            return self._offline(ref, key, f"{ref}: the lattice store did not answer ({exc})")
        if info is None:
            return self._offline(
                ref,
                key,
                f"{ref}: the lattice holds no artifact {parsed.object_name}; "
                f"push it with `lattice push {parsed} FILE`",
            )
        got = self._cached(ref, info.digest, "cache")
        if got is None:
            try:
                data = await self.store.get(parsed, info.digest)
            except StoreError as exc:
                return self._offline(ref, key, str(exc))
            got = Fetched(ref, data, info.digest, "lattice")
            if self.cache is not None:
                self.cache.put(data, info.digest)
        if self.cache is not None:
            self.cache.remember(key, info.digest)
        return got

    def _client(self, registry: str) -> OciClient:
        creds = self.credentials(registry)
        return OciClient(
            insecure=self.policy.insecure_registries,
            credentials={registry: creds} if creds is not None else None,
        )

    async def _oci(self, ref: str, parsed: refs.OciRef) -> Fetched:
        key = str(parsed)
        cache = self.cache
        client = self._client(parsed.registry)
        if parsed.pinned and cache is not None:
            got = self._cached(ref, cache.remembered(f"manifest:{parsed.digest}"), "cache")
            if got is not None:
                return got
        try:
            manifest_digest = parsed.digest or await client.resolve(parsed)
        except OciError as exc:
            if exc.unreachable:
                return self._offline(ref, key, str(exc))
            raise
        if cache is not None:
            got = self._cached(ref, cache.remembered(f"manifest:{manifest_digest}"), "cache")
            if got is not None:
                cache.remember(key, got.digest)
                return got
        try:
            pulled = await client.pull(parsed.with_digest(manifest_digest))
        except OciError as exc:
            if exc.unreachable:
                return self._offline(ref, key, str(exc))
            raise
        digest = pulled.layer.digest
        if cache is not None:
            cache.put(pulled.data, digest)
            cache.remember(f"manifest:{manifest_digest}", digest)
            cache.remember(key, digest)
        return Fetched(ref, pulled.data, digest, "oci")


async def _read_file(ref: str) -> bytes:
    parsed = urlparse(ref)
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise FetchError(f"{ref}: file:// references must be local (file:///path)")
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else ref)
    try:
        return await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        raise FetchError(f"{ref}: no such file {path}") from None
    except IsADirectoryError:
        raise FetchError(f"{ref}: {path} is a directory") from None
    except OSError as exc:
        raise FetchError(f"{ref}: cannot read {path}: {exc.strerror}") from None


async def _download(url: str, timeout: float) -> bytes:
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise FetchError(f"{url}: HTTP {resp.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_ARTIFACT_BYTES:
                    raise FetchError(f"{url}: larger than {MAX_ARTIFACT_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise FetchError(f"{url}: download failed: {exc}") from None
