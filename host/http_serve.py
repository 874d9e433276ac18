"""Serving a component's wasi:http/incoming-handler over the lattice (stub: being built).

`attach` is called by the component manager for every running component; it returns
the subscription that carries HTTP exchanges to the component's current pool (when that
pool can serve HTTP), or None.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from host.runtime.pool import InstancePool


class PoolRef:
    """The component's current pool; an image update swaps it under the subscription."""

    def __init__(self, get: Callable[[], InstancePool | None]) -> None:
        self.get = get


async def attach(nc: NATS, lattice: str, component_id: str, pool: PoolRef) -> Subscription | None:
    return None
