"""Counter component: counts in the default wasi:keyvalue bucket ("") via atomics.increment.

Built against `lattice:examples/counter-world`.  The bucket is opened per call (and dropped
again at the end of it), so no bucket handle outlives a call; the host owns the handles and
may relink the keyvalue import between calls.  `instance-id` is a random id fixed for the
life of the instance, so tests can tell whether an instance was restarted.
"""

from __future__ import annotations

import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, store

DEFAULT_BUCKET = ""

_instance_id: str | None = None


def error_text(err: store.Error) -> str:
    """A keyvalue error as a string: the case name in kebab case, or other's message."""
    if isinstance(err, store.Error_NoSuchStore):
        return "no-such-store"
    if isinstance(err, store.Error_AccessDenied):
        return "access-denied"
    if isinstance(err, store.Error_Other):
        return err.value
    return repr(err)


class Counter(exports.Counter):
    def increment(self, key: str) -> int:
        try:
            with store.open(DEFAULT_BUCKET) as bucket:
                return atomics.increment(bucket, key, 1)
        except Err as e:
            raise Err(error_text(e.value)) from None

    def get(self, key: str) -> int | None:
        try:
            with store.open(DEFAULT_BUCKET) as bucket:
                raw = bucket.get(key)
        except Err as e:
            raise Err(error_text(e.value)) from None
        if raw is None:
            return None
        try:
            return int(bytes(raw).decode("ascii").strip())
        except ValueError:
            raise Err(f"value of {key!r} is not a decimal number: {bytes(raw)[:64]!r}") from None

    def instance_id(self) -> str:
        global _instance_id
        if _instance_id is None:
            # Not at import time: componentize-py snapshots module state at build time,
            # which would give every instance of the artifact the same id.
            _instance_id = os.urandom(8).hex()
        return _instance_id
