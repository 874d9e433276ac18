"""Where a host's components come from: the fetcher and the lattice's compiled artifacts.

`bind(host)` runs once the host has joined its lattice. It gives the host's compile
cache a `Fetcher` (local digest-keyed cache under `{data_dir}/artifacts`, the lattice's
object store over the host's own NATS connection, OCI registries with the host's
policy and credentials) and, unless `--no-shared-compile`, the lattice's shared
compiled artifacts signed with this host's nkey. The reference formats, the cache and
the checks live in `lattice.artifacts`; this module only wires them to a host.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import structlog

from host.runtime.engine import COMPILE_KEY
from lattice.artifacts.cache import LocalCache
from lattice.artifacts.compiled import SharedCompiles
from lattice.artifacts.fetch import Fetcher, FetchError, FetchPolicy
from lattice.artifacts.oci import Credentials
from lattice.artifacts.wasm import NotAComponent, check_component
from lattice.protocol import subjects
from lattice.protocol.links import merge_config

if TYPE_CHECKING:
    from host.host import Host

__all__ = ["ArtifactError", "NotAComponent", "bind", "check_component"]

ArtifactError = FetchError
log = structlog.get_logger("lattice.runtime")


def bind(host: Host) -> None:
    settings = host.config.artifacts

    def credentials(registry: str) -> Credentials | None:
        name = settings.registry_configs.get(registry)
        if name is None:
            return None
        public, secret = merge_config([name], host.state.configs)
        return Credentials.from_config({**public, **secret})

    host.cache.fetcher = Fetcher(
        LocalCache(host.config.data_dir / "artifacts"),
        nc=host.nc,
        lattice=host.lattice,
        policy=FetchPolicy(
            settings.allow_latest,
            frozenset(settings.insecure_registries),
            frozenset(settings.allowed_issuers),
        ),
        credentials=credentials,
    )
    if not settings.shared_compile:
        host.cache.shared = None
        return
    known: set[str] = {host.host_id}

    async def is_lattice_host(host_id: str) -> bool:
        """A signer counts when it answers as a host of this lattice (`host.get`)."""
        if host_id in known:
            return True
        try:
            subjects.check_token(host_id, "signer")
            msg = await host.nc.request(
                subjects.ctl(host.lattice, "host", "get", host_id), b"", timeout=5
            )
            body = json.loads(msg.data)
            ok = bool(body.get("success")) and body.get("response", {}).get("host_id") == host_id
        except Exception:
            return False
        if ok:
            known.add(host_id)
        return ok

    host.cache.shared = SharedCompiles(
        host.nc,
        host.lattice,
        host_id=host.host_id,
        sign_fn=host.identity.sign,
        key=COMPILE_KEY,
        is_lattice_host=is_lattice_host,
    )
