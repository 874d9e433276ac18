"""Components' link calls on NATS connections scoped to their links.

With `--account-signing-key` a host mints each component it runs a NATS user of its
own (lattice/natsjwt.py `component_permissions`): it may publish only to the RPC
subjects of the targets the component's links name, and subscribe only to its own
inbox. The host sends that component's link calls on that connection, so a component
whose host code were subverted still could not reach a target it has no link to, nor
any control subject: the NATS server refuses it, not only the host's own check.

Links change at run time (`lattice link put --replace`), so the scope follows them:
a call to a target the connection does not cover yet waits while a new identity is
minted and connected with the new set (single flight per component, a few ms), and
the old connection is closed once its calls have had time to finish. Targets a
removed link named leave the scope at the next sweep (`SWEEP_S`). Without a signing
key there is nothing to mint with: link calls use the host's own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials

from lattice import natsauth, natsjwt
from lattice.natsauth import NatsAuth
from lattice.protocol.links import Identity, Link

log = structlog.get_logger("lattice.scoped")

SWEEP_S = 10.0  # how soon a removed link's target leaves the scope
RETIRE_S = 65.0  # an old connection outlives the longest call it may still carry


class OutOfScope(Exception):
    """The component has no link to that target (any more)."""


@dataclass
class _Scoped:
    nc: NATS
    targets: frozenset[str]


class ScopedLinks:
    def __init__(
        self,
        *,
        url: str,
        auth: NatsAuth,
        signing: tuple[natsjwt.Key, str],
        lattice: str,
        host_id: str,
        links: Mapping[Identity, Link],
    ) -> None:
        self.url = url
        self.tls = NatsAuth(tls_ca=auth.tls_ca, tls_cert=auth.tls_cert, tls_key=auth.tls_key)
        self.signing = signing
        self.lattice = lattice
        self.host_id = host_id
        self.links = links
        self._scoped: dict[str, _Scoped] = {}
        self._minting: dict[str, asyncio.Future[_Scoped]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._log = log.bind(host_id=host_id, lattice=lattice)
        self.mints = 0  # identities minted (for tests and logs)

    def targets(self, component_id: str) -> frozenset[str]:
        """Every target the component's links name now."""
        return frozenset(
            link.target for ident, link in self.links.items() if ident[0] == component_id
        )

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep())

    async def connection(self, component_id: str, target: str) -> NATS:
        """The component's connection, once its scope covers `target`."""
        scoped = self._scoped.get(component_id)
        if scoped is None or target not in scoped.targets:
            scoped = await self._mint(component_id)
            if target not in scoped.targets:
                raise OutOfScope(f"component {component_id} has no link to {target}")
        return scoped.nc

    async def _mint(self, component_id: str) -> _Scoped:
        """A new identity for the component's current targets (one at a time per id)."""
        pending = self._minting.get(component_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_Scoped] = asyncio.get_running_loop().create_future()
        self._minting[component_id] = fut
        started = time.perf_counter()
        try:
            targets = self.targets(component_id)
            key, account = self.signing
            jwt, seed = natsjwt.mint_component(
                key, account, self.lattice, component_id, self.host_id, targets
            )
            nc = await natsauth.connect(
                self.url,
                self.tls,
                name=f"lattice component {component_id} on {self.host_id[:12]}",
                user_credentials=RawCredentials(natsjwt.creds(jwt, seed)),  # never a file
                inbox_prefix=natsjwt.component_inbox(self.lattice, component_id),
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
            )
            scoped = _Scoped(nc, targets)
            old = self._scoped.get(component_id)
            self._scoped[component_id] = scoped
            self.mints += 1
            self._log.info(
                "component link identity minted",
                component_id=component_id,
                targets=sorted(targets),
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
            if old is not None:
                self._retire(old.nc)
            fut.set_result(scoped)
            return scoped
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through their own await
            raise
        finally:
            self._minting.pop(component_id, None)

    def _retire(self, nc: NATS, after: float = RETIRE_S) -> None:
        async def close() -> None:
            await asyncio.sleep(after)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5.0)

        task = asyncio.create_task(close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _sweep(self) -> None:
        """Narrow the scopes whose components lost a link; drop those of components gone."""
        while True:
            await asyncio.sleep(SWEEP_S)
            for component_id, scoped in list(self._scoped.items()):
                if scoped.targets - self.targets(component_id):
                    with contextlib.suppress(Exception):
                        await self._mint(component_id)

    async def forget(self, component_id: str) -> None:
        """The component stopped on this host: close its connection (after its calls)."""
        scoped = self._scoped.pop(component_id, None)
        if scoped is not None:
            self._retire(scoped.nc, after=5.0)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._retiring):
            task.cancel()
        conns = [s.nc for s in self._scoped.values()]
        self._scoped.clear()
        for nc in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5.0)
