"""Leader election for controller replicas: one key in a KV bucket whose entries expire.

The bucket `CONTROLLER_LEASE_{lattice}` keeps each entry for `ttl` seconds. A replica
becomes leader by creating the key (create fails while another replica's entry lives)
and stays leader by rewriting it with compare-and-set on the revision it last wrote, a
few times per `ttl`. If the leader dies, its entry ages out and a standby's next
`create` succeeds: a takeover within `ttl` plus one renewal period. Compare-and-set
means two replicas can never both believe they renewed the same lease.
"""

from __future__ import annotations

import json
import time

import structlog
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from lattice import buckets

log = structlog.get_logger("lattice.controller.lease")

KEY = "leader"


class Lease:
    def __init__(self, nc: NATS, lattice: str, owner: str, ttl: float = 6.0) -> None:
        self.nc = nc
        self.lattice = lattice
        self.owner = owner
        self.ttl = ttl
        self._kv: KeyValue | None = None
        self._revision: int | None = None
        self._log = log.bind(lattice=lattice, controller_id=owner)

    @property
    def bucket(self) -> str:
        return f"CONTROLLER_LEASE_{self.lattice}"

    @property
    def is_leader(self) -> bool:
        return self._revision is not None

    async def start(self) -> None:
        self._kv = await buckets.key_value(
            self.nc, api.KeyValueConfig(self.bucket, ttl=self.ttl, history=1)
        )

    def _value(self) -> bytes:
        return json.dumps({"owner": self.owner, "renewed": time.time()}).encode()

    async def tick(self) -> bool:
        """Acquire or renew; True while this replica leads. Call every `ttl / 3`."""
        assert self._kv is not None
        try:
            if self._revision is None:
                self._revision = await self._kv.create(KEY, self._value())
                self._log.info("became leader")
            else:
                self._revision = await self._kv.update(KEY, self._value(), last=self._revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError, NotFoundError):
            if self._revision is not None:
                self._log.warning("lost the lease")
            self._revision = None
        except Exception as exc:  # NATS trouble: assume we lost it rather than act twice
            if self._revision is not None:
                self._log.warning("could not renew the lease", error=str(exc) or type(exc).__name__)
            self._revision = None
        return self.is_leader

    async def holder(self) -> str | None:
        assert self._kv is not None
        try:
            entry = await self._kv.get(KEY)
        except (KeyNotFoundError, NotFoundError):
            return None
        return json.loads(entry.value or b"{}").get("owner") if entry.value else None

    async def release(self) -> None:
        """Step down at once so a standby need not wait for the entry to expire."""
        if self._kv is not None and self._revision is not None:
            try:
                await self._kv.delete(KEY, last=self._revision)
            except Exception as exc:
                self._log.debug("release failed", error=str(exc))
        self._revision = None
