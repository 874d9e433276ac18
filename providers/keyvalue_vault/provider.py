"""The keyvalue-vault provider: one HTTP client per Vault address, one store per link.

Settings per link: `addr` (required), `mount` (default `secret`), `page_size`; the token
is target secret `token`, or target config `token` as a logged (valueless) fallback.
Links to the same address share one httpx client (connection pool), closed with the
last of them. The token is held by the link's store and sent only as a header.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx

from providers.keyvalue import KeyValueProvider, SharedPool, Store
from providers.keyvalue_vault.store import VaultStore
from providers.sdk import HostData, Link, LinkKey

MOUNT_RE = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


def _open(addr: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=addr, timeout=httpx.Timeout(2.0, connect=1.0))


async def _close(client: httpx.AsyncClient) -> None:
    await client.aclose()


class VaultKeyValueProvider(KeyValueProvider):
    backend = "vault"

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self.clients: SharedPool[str, httpx.AsyncClient] = SharedPool(_open, _close)
        self._addrs: dict[LinkKey, str] = {}

    def _token(self, link: Link) -> str:
        token = link.secret("token")
        if token:
            return token
        token = link.target_config.get("token")
        if token:
            self.log.warning(
                "vault token read from target_config: mark it secret", source_id=link.source_id
            )
            return token
        raise ValueError("no Vault token: set the link's target secret 'token'")

    async def open_store(self, link: Link) -> Store:
        addr = (self.setting(link, "addr") or "").rstrip("/")
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("'addr' must be the Vault address, e.g. http://127.0.0.1:8200")
        mount = (self.setting(link, "mount", "secret") or "secret").strip("/")
        if not MOUNT_RE.match(mount):
            raise ValueError(f"'mount' {mount!r} is not a valid Vault mount path")
        token = self._token(link)
        client = self.clients.acquire(addr)
        self._addrs[link.key] = addr
        return VaultStore(client, addr, mount, token)

    async def close_store(self, link: Link, store: Store) -> None:
        addr = self._addrs.pop(link.key, None)
        if addr is not None:
            await self.clients.release(addr)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self.clients.close_all()
