"""Ending NATS subscriptions without dropping what the server has already sent.

nats-py's `unsubscribe()` discards every message a subscription still holds, and
nats-server may have routed more to it before it saw the UNSUB: for a queue member
serving calls, each of those is a caller left to wait out its deadline. nats-py's
`drain()` (UNSUB, a flush, then the held messages go to the callback) is not enough
either: a publisher's connection that matched the subscription just before the server
removed it can still write a message after the flush's PONG, and nats-py drops a
message for a subscription it no longer knows. tests/test_stop_drains.py lost 2-17 calls
in a few runs of 8 that way on a loaded machine. So `drain` here is nats-py's drain
with a grace period between the flush and the local removal, during which such late
messages still reach the callback. It uses nats-py internals (`_send_unsubscribe`,
`_pending_queue`, `_remove_sub`) because no public call leaves a subscription
listening after its UNSUB; the host (a component's stop) and the provider SDK (its
shutdown) both end theirs here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from nats.aio.subscription import Subscription

# How long a drained subscription still hears late messages after the server confirmed
# its UNSUB. Late ones come within milliseconds; this covers a loaded machine.
LATE_GRACE_S = 0.1


async def drain(subs: Iterable[Subscription], *, connected: bool, timeout: float) -> None:
    """Drain `subs` at once within `timeout`; with the connection down, drop them here
    instead (the flush would wait for a reconnect, and nothing could be answered)."""

    async def one(sub: Subscription) -> None:
        with contextlib.suppress(Exception):  # closed or draining meanwhile: nothing to hand on
            await (_drain_one(sub) if connected else sub.unsubscribe())

    pending = [one(s) for s in subs]
    if pending:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pending), timeout)


async def _drain_one(sub: Subscription) -> None:
    conn = sub._conn
    if conn.is_closed or conn.is_draining or sub._closed:
        return
    try:
        await conn._send_unsubscribe(sub._id)
        await conn.flush()  # the server has seen the UNSUB ...
        await asyncio.sleep(LATE_GRACE_S)  # ... and publishers that matched it before have written
        await sub._pending_queue.join()
    finally:
        sub._closed = True
        sub._stop_processing()
        conn._remove_sub(sub._id)
