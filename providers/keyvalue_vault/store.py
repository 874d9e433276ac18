"""Vault KV v2 as a wasi:keyvalue store, over Vault's HTTP API (httpx, async).

Layout: wasi bucket `b`, key `k` -> secret `{mount}/data/b/{escape(k)}` holding
`{"value": base64(bytes)}`. `escape` (providers.keyvalue.keycodec) keeps `[A-Za-z0-9_-]`
and writes other bytes as `=XX`, so a key is exactly one path segment ('/' does not
nest, '.'/'..' are not path tricks) and list-keys (`LIST {mount}/metadata/b/`) gives
the original keys back. delete removes the metadata (all versions), so a deleted key
does not linger in listings. increment reads the secret's version and writes with
check-and-set (`options.cas`), retrying only on a CAS conflict.

Accounting: no request is repeated blindly (httpx does not retry by itself; its
transport `retries` only re-dials connections and is 0 here). Errors: could not connect,
or no pooled connection free -> `Unavailable` (nothing was sent); HTTP 503 (sealed,
standby) -> `Unavailable` with Vault's words (refused before it ran); a write sent
with no answer (read timeout, connection dropped) or a 5xx other than 503 ->
`Indeterminate` (it may have been applied); reads in those cases -> `Unavailable`;
403 -> `access-denied`; other failures -> `other` with Vault's error text. The token
is sent only in the `X-Vault-Token` header and never appears in a message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

import httpx

from providers.keyvalue.keycodec import escape, unescape
from providers.keyvalue.semantics import Indeterminate, KvError, Unavailable, short
from providers.keyvalue.store import MAX_CAS_RETRIES, Store, Update, backoff, contention

CAS_MISMATCH = "check-and-set parameter did not match"


def _vault_errors(resp: httpx.Response) -> str:
    """Vault's own words: its `errors` list, or what a sys/health body says."""
    with contextlib.suppress(ValueError, AttributeError):
        body = resp.json()
        if body.get("errors"):
            return "; ".join(str(e) for e in body["errors"])
        if body.get("initialized") is False:
            return "Vault is not initialized"
        if body.get("sealed") is True:
            return "Vault is sealed"
    return f"HTTP {resp.status_code}"


class VaultStore(Store):
    backend = "vault"

    def __init__(self, http: httpx.AsyncClient, addr: str, mount: str, token: str) -> None:
        self._http = http
        self._addr = addr
        self._mount = mount
        self._headers = {"X-Vault-Token": token}

    @property
    def where(self) -> str:
        return f"vault {self._addr} mount {self._mount}"

    def _data(self, bucket: str, key: str) -> str:
        return f"/v1/{self._mount}/data/{bucket}/{escape(key)}"

    def _meta(self, bucket: str, key: str = "") -> str:
        return f"/v1/{self._mount}/metadata/{bucket}/{escape(key) if key else ''}"

    async def _send(
        self, method: str, path: str, body: Any = None, *, write: bool = False
    ) -> httpx.Response:
        """One request; `write`: it changes data, so an unknown outcome is
        `Indeterminate`, not `Unavailable`."""
        lost = Indeterminate if write else Unavailable
        try:
            resp = await self._http.request(method, path, json=body, headers=self._headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise Unavailable(  # the request never left
                "vault", f"cannot reach {self._addr}: {exc or type(exc).__name__}"
            ) from None
        except httpx.TimeoutException:
            raise lost("vault", f"no answer from {self._addr}") from None
        except httpx.TransportError as exc:
            raise lost(
                "vault", f"connection to {self._addr} lost: {exc or type(exc).__name__}"
            ) from None
        if resp.status_code == 503:
            raise Unavailable("vault", _vault_errors(resp))
        if resp.status_code == 403:
            raise KvError.access_denied()
        if resp.status_code >= 500:
            raise lost("vault", f"{self._addr}: {_vault_errors(resp)}")
        return resp

    @staticmethod
    def _missing(resp: httpx.Response) -> bool:
        """A 404 that means "no such secret" (not "no such mount/route", which has errors)."""
        if resp.status_code != 404:
            return False
        with contextlib.suppress(ValueError):
            return not resp.json().get("errors")
        return False

    def _fail(self, resp: httpx.Response) -> KvError:
        return KvError.other(f"vault error {resp.status_code}: {_vault_errors(resp)}")

    async def _read(self, bucket: str, key: str) -> tuple[bytes | None, int]:
        """(value or None, current version or 0) of one key."""
        resp = await self._send("GET", self._data(bucket, key))
        if self._missing(resp):
            return None, 0
        if resp.status_code == 404:  # latest version soft-deleted by someone else
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                meta = resp.json()["data"]["metadata"]
                return None, int(meta["version"])
            raise self._fail(resp)
        if resp.status_code != 200:
            raise self._fail(resp)
        data = resp.json()["data"]
        version = int(data["metadata"]["version"])
        secret = data.get("data")
        if secret is None:
            return None, version
        try:
            return base64.b64decode(secret["value"], validate=True), version
        except (KeyError, TypeError, binascii.Error):
            raise KvError.other(
                f"secret for key {short(key)} has no base64 'value' field"
            ) from None

    async def _write(self, bucket: str, key: str, value: bytes, cas: int | None = None) -> bool:
        """Write one version; False when check-and-set `cas` did not match."""
        body: dict[str, Any] = {"data": {"value": base64.b64encode(value).decode("ascii")}}
        if cas is not None:
            body["options"] = {"cas": cas}
        resp = await self._send("POST", self._data(bucket, key), body, write=True)
        if resp.status_code in (200, 204):
            return True
        if resp.status_code == 400 and CAS_MISMATCH in _vault_errors(resp):
            return False
        raise self._fail(resp)

    async def get(self, bucket: str, key: str) -> bytes | None:
        value, _ = await self._read(bucket, key)
        return value

    async def set(self, bucket: str, key: str, value: bytes) -> None:
        await self._write(bucket, key, value)

    async def delete(self, bucket: str, key: str) -> None:
        resp = await self._send("DELETE", self._meta(bucket, key), write=True)
        if resp.status_code not in (200, 204) and not self._missing(resp):
            raise self._fail(resp)

    async def keys(self, bucket: str) -> list[str]:
        resp = await self._send("LIST", self._meta(bucket))
        if self._missing(resp):
            return []
        if resp.status_code != 200:
            raise self._fail(resp)
        out = []
        for name in resp.json().get("data", {}).get("keys", []):
            with contextlib.suppress(ValueError):  # folders and secrets not written by us
                out.append(unescape(name))
        return out

    async def update(self, bucket: str, key: str, fn: Update) -> bytes:
        """Read-modify-write as check-and-set on the version read. Only a CAS mismatch
        is tried again: Vault refused that write, so nothing was written and the next
        round starts from the newer version. A write with an unknown outcome raises
        `Indeterminate` out of here and is never repeated."""
        for attempt in range(MAX_CAS_RETRIES):
            current, version = await self._read(bucket, key)
            new = fn(current)
            if await self._write(bucket, key, new, cas=version):
                return new
            await backoff(attempt)
        raise contention(key)

    async def ping(self) -> None:
        resp = await self._send("GET", "/v1/sys/health?standbyok=true")
        if resp.status_code not in (200, 429, 473):
            raise Unavailable("vault", f"{self._addr}: {_vault_errors(resp)}")
        try:
            resp = await self._send("GET", "/v1/auth/token/lookup-self")
        except KvError as exc:
            if exc.wire == {"access-denied": None}:
                raise KvError.other("vault token rejected (permission denied)") from None
            raise
        if resp.status_code != 200:
            raise KvError.other(f"vault token check failed: {_vault_errors(resp)}")
