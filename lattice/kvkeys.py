"""Listing the keys of a JetStream key-value bucket without leaving a consumer behind.

nats-py's `KeyValue.keys()` creates an ephemeral consumer per call, which lives on the
server for minutes; called often (a controller listing every second) they pile up until
the server refuses new consumers (err 10026), and a caller that took that failure for
"no keys" once tore down every deployed app. One stream-info request with a subjects
filter answers the same question with no consumer. This module does only that.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS


async def bucket_keys(nc: NATS, bucket: str) -> list[str]:
    """The live keys of `bucket`, sorted; raises what nats-py raises (no bucket, no
    server): an empty list means an empty bucket, never a failed read."""
    prefix = f"$KV.{bucket}."
    info = await nc.jetstream().stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return sorted(s.removeprefix(prefix) for s in (info.state.subjects or {}))
