"""The lattice's bounded event stream, so `lattice events --since 10m` can replay.

A JetStream stream `LATTICE_EVENTS_{lattice}` captures `wasmbus.evt.{lattice}.>`,
bounded by age, count and size (the oldest go first), and per subject so one chatty
type (heartbeats carry a full inventory) cannot push every other event out. Every host
makes sure it exists when it starts; creating it is idempotent, and a stream that
exists with other limits is updated to these. Its replica count follows the cluster
(`lattice.buckets.replicas`); an existing stream is never lowered. A failure is
logged, never fatal: events still flow live without it. It owns no subscription and
publishes nothing.
"""

from __future__ import annotations

import structlog
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from lattice import buckets
from lattice.protocol.subjects import events_wildcard

log = structlog.get_logger("lattice.events_stream")

MAX_AGE_S = 24 * 3600.0
MAX_MSGS = 20_000
MAX_BYTES = 64 * 1024 * 1024
MAX_MSGS_PER_SUBJECT = 2_000  # heartbeats share one subject per lattice


def stream_name(lattice: str) -> str:
    return f"LATTICE_EVENTS_{lattice}"


def stream_config(lattice: str, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=stream_name(lattice),
        description=f"recent events of lattice {lattice} (lattice events)",
        subjects=[events_wildcard(lattice)],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=MAX_AGE_S,
        max_msgs=MAX_MSGS,
        max_bytes=MAX_BYTES,
        max_msgs_per_subject=MAX_MSGS_PER_SUBJECT,
        num_replicas=replicas,
    )


async def ensure(nc: NATS, lattice: str) -> None:
    """Create (or bring to these limits) the lattice's event stream; never raises."""
    js = nc.jetstream()
    try:
        config = stream_config(lattice, buckets.replicas(nc))
        try:
            await js.add_stream(config)
        except BadRequestError:  # exists with other settings: make the limits ours
            have = (await js.stream_info(config.name)).config.num_replicas or 1
            config.num_replicas = max(have, config.num_replicas or 1)
            await js.update_stream(config)
    except Exception as exc:
        log.warning(
            "no event stream: `lattice events` shows live events only",
            lattice=lattice,
            error=str(exc) or type(exc).__name__,
        )
