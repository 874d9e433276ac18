"""Pingpong component: answers every "ping" message with "pong {n}".

Built against `lattice:examples/pingpong-world`. The messaging provider calls the
`wasmcloud:messaging/handler` export for each message on the subscriptions of its link
to this component. For a body of exactly b"ping" it counts the ping in wasi:keyvalue
(`atomics.increment` of key "pings" in bucket "", so every instance on every host shares
one count) and publishes `pong {count}` through `wasmcloud:messaging/consumer`: to the
message's reply-to when there is one (so a NATS request gets its answer), else to
subject "pong". Any other body is refused with err("expected ping, got …"), which the
provider logs. Keyvalue and publish failures come back as err too, never as traps.
The bucket is opened per message and dropped at the end of it.
"""

from __future__ import annotations

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, consumer, store, types

DEFAULT_BUCKET = ""
COUNTER_KEY = "pings"
PONG_SUBJECT = "pong"
SHOWN_BYTES = 32


def error_text(err: store.Error) -> str:
    """A keyvalue error as a string: the case name in kebab case, or other's message."""
    if isinstance(err, store.Error_NoSuchStore):
        return "no-such-store"
    if isinstance(err, store.Error_AccessDenied):
        return "access-denied"
    if isinstance(err, store.Error_Other):
        return err.value
    return repr(err)


def count_ping() -> int:
    try:
        with store.open(DEFAULT_BUCKET) as bucket:
            return atomics.increment(bucket, COUNTER_KEY, 1)
    except Err as e:
        raise Err(f"counting the ping failed: {error_text(e.value)}") from None


class Handler(exports.Handler):
    def handle_message(self, msg: types.BrokerMessage) -> None:
        body = bytes(msg.body)
        if body != b"ping":
            shown = body[:SHOWN_BYTES]
            more = "…" if len(body) > SHOWN_BYTES else ""
            raise Err(f"expected ping, got {shown!r}{more} on {msg.subject}")
        count = count_ping()
        target = msg.reply_to or PONG_SUBJECT
        pong = types.BrokerMessage(subject=target, body=f"pong {count}".encode(), reply_to=None)
        try:
            consumer.publish(pong)
        except Err as e:
            raise Err(f"publishing the pong to {target} failed: {e.value}") from None
