"""Shell completion of ids from the live lattice: hosts, components, providers, apps.

Used as typer `autocompletion` callbacks. Each asks the lattice the command would talk
to (its --nats-url/--lattice if already typed, else the context) and gives up after
about two seconds with no suggestions, so a missing lattice never stalls the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import typer

from lattice.client import LatticeClient

WAIT_S = 2.0


async def _ids(c: LatticeClient, kind: str) -> list[str]:
    if kind == "app":
        return [m["name"] for m in (await c.model("list"))["models"]]
    hosts = await c.hosts(wait=0.5)
    if kind == "host":
        return [h.id for h in hosts]
    found: set[str] = set()
    for h in hosts:
        inv = await c.inventory(h.id)
        if kind == "component":
            found.update(x.id for x in inv.components)
        else:
            found.update(p["id"] for p in inv.providers)
    return sorted(found)


def live(kind: str) -> Callable[[typer.Context, str], list[str]]:
    """A completion callback for ids of `kind` (host, component, provider or app)."""

    def complete(ctx: typer.Context, incomplete: str) -> list[str]:
        from lattice.cli.common import target

        params: dict[str, Any] = ctx.params if ctx is not None else {}
        with contextlib.suppress(Exception):
            where = target(params.get("nats_url"), params.get("lattice"))

            async def go() -> list[str]:
                c = await LatticeClient.connect(
                    where.nats_url, where.lattice, 1.0, where.creds, tls_ca=where.tls_ca
                )
                async with c:
                    return await _ids(c, kind)

            ids = asyncio.run(asyncio.wait_for(go(), WAIT_S))
            return [i for i in ids if i.startswith(incomplete)]
        return []

    return complete
