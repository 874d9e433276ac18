"""The host's liveness beat: a tiny message every `interval` seconds, off the worker threads.

Heartbeats carry the full inventory and come every 30 s, which is too slow to notice a
dead host quickly and too heavy to send every second. A beat is the host id, a sequence
number and the interval (`lattice.protocol.events.beat`) on
`wasmbus.beat.{lattice}.{host_id}`; the controller treats a host that beat before as
lost after a few missed beats (docs/protocol.md, "Liveness").

A beat must mean "the process is alive", not "the process is idle": a host whose event
loop is busy (a long compile, a stalled callback, a heavy garbage collection) is slow,
not dead. So the beat runs in a thread of its own with its own event loop and its own
small NATS connection, and never touches the host's loop, locks or worker threads. Wasm
calls release the GIL and pure-Python work yields it every few milliseconds, so the beat
thread keeps its rhythm under load. When the process dies, so does the thread, and the
beats stop.

This module never reads the host's state and never decides anything; it only beats.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import nats
import structlog

from lattice.natsauth import ANONYMOUS, NatsAuth, server_list
from lattice.protocol import events

log = structlog.get_logger("lattice.host.liveness")


class Beater:
    """Publishes beats from a daemon thread until `stop()`."""

    def __init__(
        self,
        nats_url: str,
        lattice: str,
        host_id: str,
        interval: float,
        auth: NatsAuth = ANONYMOUS,
    ) -> None:
        if interval <= 0:
            raise ValueError("beat interval must be positive")
        self.nats_url = nats_url
        self.auth = auth
        self.lattice = lattice
        self.host_id = host_id
        self.interval = interval
        self.sent = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._log = log.bind(host_id=host_id, lattice=lattice)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lattice-beat", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)  # the loop exists; the connection may still be on its way

    def stop(self, timeout: float = 3.0) -> None:
        """Stop beating (bounded: a dead connection must not hold up a host's stop)."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # the beat must never take the host down
            self._log.warning("liveness beat stopped", error=str(exc) or type(exc).__name__)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        nc = None
        while nc is None and not self._stop.is_set():
            try:
                nc = await nats.connect(
                    server_list(self.nats_url),
                    **self.auth.connect_kwargs(),
                    name=f"lattice-beat {self.host_id[:12]}",
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    pending_size=64 * 1024,  # beats are tiny; drop, never pile up
                )
            except Exception as exc:
                self._log.warning("beat connection failed; retrying", error=str(exc))
                await self._sleep(self.interval)
        if nc is None:
            return
        subject = events.beat_subject(self.lattice, self.host_id)
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                self.sent += 1
                with contextlib.suppress(Exception):  # disconnected: the next one goes
                    await nc.publish(subject, events.beat(self.host_id, self.sent, self.interval))
                    await nc.flush(timeout=self.interval)
                # on a fixed grid, so a slow publish does not stretch the rhythm
                await self._sleep(self.interval - (time.monotonic() - started) % self.interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
