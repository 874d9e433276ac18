"""The lattice's JetStream buckets and streams, with as many replicas as the cluster allows.

Every KV bucket, object store and stream the lattice keeps (links, config, manifests,
status, leases, artifacts, events) is opened through here, so each gets the same
replica count: `LATTICE_JS_REPLICAS` when set (`lattice up --js-replicas`, `lattice
controller --js-replicas`), else 3 on a NATS cluster of three or more servers (the
server's INFO lists the cluster's client URLs), the cluster's size below that, and 1 on
a single server or a leaf node. An existing bucket is opened as it is, never re-created
(a create with other settings would fail), and when it has fewer replicas than wanted it
is raised with a stream update; a server that refuses (not clustered, not enough
servers) leaves it as it was, with a warning. A bucket is never lowered here.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

log = structlog.get_logger("lattice.buckets")

ENV = "LATTICE_JS_REPLICAS"
MAX_AUTO = 3


def cluster_size(nc: NATS) -> int:
    """Servers in the cluster the connection joined, from the server's INFO (nats-py
    keeps it in `_server_info`; without it we assume one server)."""
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if not info.get("jetstream"):
        return 1  # a leaf node or a server without JetStream: its hub decides nothing here
    return max(1, len(set(info.get("connect_urls") or [])))


def replicas(nc: NATS) -> int:
    """How many replicas the lattice's buckets get on this connection's cluster."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{ENV} must be a whole number from 1 to 5, not {raw!r}") from None
        if not 1 <= n <= 5:
            raise ValueError(f"{ENV} must be from 1 to 5, not {n}")
        return n
    return min(MAX_AUTO, cluster_size(nc))


async def raise_replicas(nc: NATS, stream: str, want: int) -> None:
    """Give `stream` `want` replicas when it has fewer; a refusal is logged, not raised."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
        have = info.config.num_replicas or 1
        if have >= want:
            return
        await js.update_stream(replace(info.config, num_replicas=want))
        log.info("raised replicas", stream=stream, replicas=want, was=have)
    except Exception as exc:
        log.warning(
            "could not raise replicas", stream=stream, replicas=want, error=str(exc) or repr(exc)
        )


async def key_value(nc: NATS, config: api.KeyValueConfig) -> KeyValue:
    """Open the bucket, or create it with the cluster's replica count."""
    js = nc.jetstream()
    want = replicas(nc)
    try:
        kv = await js.key_value(config.bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(config=replace(config, replicas=want))
    if want > 1:
        await raise_replicas(nc, f"KV_{config.bucket}", want)
    return kv


async def object_store(nc: NATS, config: api.ObjectStoreConfig) -> ObjectStore:
    """Create the object store with the cluster's replica count (it does not exist yet)."""
    return await nc.jetstream().create_object_store(
        config.bucket, config=replace(config, replicas=replicas(nc))
    )


async def opened_object_store(nc: NATS, bucket: str) -> None:
    """An object store that already existed: raise its replicas when fewer than wanted."""
    want = replicas(nc)
    if want > 1:
        await raise_replicas(nc, f"OBJ_{bucket}", want)
