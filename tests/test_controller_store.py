"""The controller's manifest store on a real NATS: listing never loses applications.

The teardown in issue 8: `ManifestStore.all()` listed keys with nats-py's `kv.keys()`,
which leaves an ephemeral consumer on the server for five minutes per call. A controller
reconciling about once a second reached the server's consumer limit within minutes; the
next listing failed, `all()` answered "no applications", and the planner stopped every
managed replica and provider and deleted their links.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from lattice.controller.run.store import AppRecord, ManifestStore, StoreError

LISTINGS = 1100  # more than the ~1000 consumers the server allowed the old listing


async def test_listing_many_times_keeps_every_application(nc: NATS, lattice_name: str) -> None:
    store = ManifestStore(nc, lattice_name)
    await store.start()
    for name in ("alpha", "beta"):
        await store._kv.put(f"app.{name}", AppRecord(name, deployed="v1").to_json())  # type: ignore[union-attr]
    await store._kv.delete("app.beta")  # type: ignore[union-attr]  # a deleted app is not listed
    for i in range(LISTINGS):
        names = [r.name for r in await store.all()]
        assert names == ["alpha"], f"listing {i} returned {names}"
    info = await nc.jetstream().stream_info(f"KV_{store.bucket}")
    assert info.state.consumer_count == 0, "listing left consumers on the server"


async def test_unreadable_store_raises_instead_of_listing_nothing(
    nc: NATS, lattice_name: str
) -> None:
    store = ManifestStore(nc, lattice_name)
    await store.start()
    await store._kv.put("app.alpha", AppRecord("alpha", deployed="v1").to_json())  # type: ignore[union-attr]
    await nc.jetstream().delete_stream(f"KV_{store.bucket}")
    with pytest.raises(StoreError, match=f"cannot list the applications in {store.bucket}"):
        await store.all()


async def test_empty_store_lists_nothing(nc: NATS, lattice_name: str) -> None:
    store = ManifestStore(nc, lattice_name)
    await store.start()
    assert await store.all() == []
