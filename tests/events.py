"""A small event recorder for tests: subscribe to a lattice's events, wait for one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NATS

from lattice.protocol import subjects


class EventRecorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._sub: Any = None

    @classmethod
    async def start(cls, nc: NATS, lattice: str) -> EventRecorder:
        rec = cls()

        async def on_event(msg: Any) -> None:
            rec.events.append(json.loads(msg.data))
            rec._changed.set()

        rec._sub = await nc.subscribe(subjects.events_wildcard(lattice), cb=on_event)
        await nc.flush()
        return rec

    def of_type(self, short: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == f"com.wasmcloud.lattice.{short}"]

    async def wait_for(
        self,
        short: str,
        pred: Callable[[dict[str, Any]], bool] = lambda d: True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                for e in self.of_type(short):
                    if pred(e["data"]):
                        return e
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
