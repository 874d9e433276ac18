"""The controller loop: hold the lease, observe, plan, act, publish status.

Every replica serves the API and watches the lattice; only the lease holder plans and
acts, so several replicas never do the same work twice. The loop runs when something
changed (an event, a link, a deploy) and at least every `tick` seconds, so backoff
retries and host expiry are noticed without an event.

Status per application is written to `CONTROLLER_STATUS_{lattice}` (any replica can
answer `model.status` from it) and published on `wadm.status.{lattice}.{name}` when it
changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from lattice import buckets, natsauth
from lattice.client import LatticeClient, signer_of
from lattice.controller import naming
from lattice.controller.commands import Command, stops
from lattice.controller.manifest import Manifest
from lattice.controller.plan import DEFAULT_HOST_EXPIRY, Plan, plan
from lattice.controller.run.api import Api
from lattice.controller.run.lease import Lease
from lattice.controller.run.metrics import ControllerMetrics
from lattice.controller.run.observer import DEFAULT_BEAT_MISSES, Observer
from lattice.controller.run.store import AppRecord, ManifestStore, StoreError
from lattice.controller.run.worker import Worker
from lattice.controller.snapshot import LatticeSnapshot
from lattice.natsauth import ANONYMOUS, NatsAuth

log = structlog.get_logger("lattice.controller")


def first_deployed(rec: AppRecord) -> float:
    """When the app was first deployed: the earlier app wins a disputed id or link."""
    return next(
        (h["at"] for h in rec.history if h["action"] in ("deploy", "rollback")), float("inf")
    )


class Controller:
    def __init__(
        self,
        nats_url: str,
        lattice: str = "default",
        *,
        controller_id: str | None = None,
        host_expiry: float = DEFAULT_HOST_EXPIRY,
        tick: float = 1.0,
        lease_ttl: float = 6.0,
        resync_interval: float = 5.0,
        beat_misses: float = DEFAULT_BEAT_MISSES,
        beats: bool = True,
        admin_addr: str | None = None,
        nats_auth: NatsAuth = ANONYMOUS,
    ) -> None:
        self.nats_url = nats_url
        self.nats_auth = nats_auth
        self.lattice = lattice
        self.id = controller_id or f"controller-{uuid.uuid4().hex[:8]}"
        self.host_expiry = host_expiry
        self.tick = tick
        self.lease_ttl = lease_ttl
        self.resync_interval = resync_interval
        self.beat_misses = beat_misses
        self.beats = beats  # False: ignore liveness beats (heartbeats and pings only)
        self.nc: NATS | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._statuses: dict[str, dict[str, Any]] = {}
        self._manifests: dict[tuple[str, str], Manifest] = {}
        self._status_kv: KeyValue | None = None
        self._lost_seen: set[str] = set()  # lost hosts already written to history
        self._stop = asyncio.Event()
        self._log = log.bind(lattice=lattice, controller_id=self.id)
        self.admin_addr = admin_addr  # /livez, /readyz, /metrics (host/admin.py)
        self.admin: Any = None
        self.metrics = ControllerMetrics(self)

    @property
    def is_leader(self) -> bool:
        return self.lease.is_leader

    async def start(self) -> None:
        self.nc = await natsauth.connect(
            self.nats_url,
            self.nats_auth,
            name=f"lattice-{self.id}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
        )
        # its control requests are signed by its user nkey: a policy service sees who asks
        self.client = LatticeClient(
            self.nc, self.lattice, timeout=10.0, signer=signer_of(self.nats_auth)
        )
        self.store = ManifestStore(self.nc, self.lattice)
        await self.store.start()
        self._status_kv = await buckets.key_value(
            self.nc, api.KeyValueConfig(f"CONTROLLER_STATUS_{self.lattice}", history=1)
        )
        self.lease = Lease(self.nc, self.lattice, self.id, ttl=self.lease_ttl)
        await self.lease.start()
        self.worker = Worker(self.client)
        self.observer = Observer(
            self.nc,
            self.client,
            self.lattice,
            resync_interval=self.resync_interval,
            beat_misses=self.beat_misses,
            beats=self.beats,
        )
        self.observer.listeners.append(self.worker.on_event)
        await self.observer.start()
        self.api = Api(self.lattice, self.store, self.read_status)

        async def on_api(msg: Any) -> None:
            reply = await self.api.handle(msg.subject, msg.data)
            if msg.reply:
                await self.nc.publish(msg.reply, json.dumps(reply).encode())  # type: ignore[union-attr]
            if reply.get("result") not in ("error", None):
                self.observer.changed.set()  # a deploy or undeploy: reconcile now

        await self.nc.subscribe(
            f"wadm.api.{self.lattice}.>", queue=f"controller.{self.lattice}", cb=on_api
        )
        await self.nc.flush()  # the API is answerable once start() returns
        self._tasks = [asyncio.create_task(self._lease_loop()), asyncio.create_task(self._loop())]
        if self.admin_addr:
            from host.admin import AdminServer, controller_checks

            admin = AdminServer(
                self.admin_addr, self.metrics.registry, controller_checks(self), "controller"
            )
            await admin.start()
            self.admin = admin
        self._log.info("controller started")

    async def stop(self) -> None:
        """Step down and disconnect; every step is bounded so a stop never hangs."""
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.lease.release(), 3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.observer.stop(), 5.0)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5.0)
        if self.admin is not None:
            await self.admin.stop()
        self._log.info("controller stopped")

    async def run_forever(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    # -- loops ----------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            was = self.lease.is_leader
            if await self.lease.tick() and not was:
                self.observer.changed.set()
            await asyncio.sleep(self.lease_ttl / 3)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.observer.changed.wait(), self.tick)
            self.observer.changed.clear()
            if not self.lease.is_leader:
                continue
            try:
                with self.metrics.reconcile.time():
                    await self.reconcile()
            except StoreError as exc:  # plan nothing from a partial view; try next round
                self.metrics.reconcile_errors.inc()
                self._log.warning("cannot read the applications; not reconciling", error=str(exc))
            except Exception:
                self.metrics.reconcile_errors.inc()
                self._log.exception("reconcile failed")

    async def reconcile(self) -> int:
        """One round: plan from what is stored and observed, send the commands."""
        records = sorted(await self.store.all(), key=first_deployed)
        desired: list[Manifest] = []
        retired: list[Manifest] = []
        for rec in records:
            for entry in rec.versions:
                m = self._manifest(rec.name, entry)
                (desired if entry["version"] == rec.deployed else retired).append(m)
        observed = self.observer.snapshot()
        now = time.time()

        def plan_for(snapshot: LatticeSnapshot) -> Plan:
            return plan(
                desired,
                snapshot,
                now=now,
                host_expiry=self.host_expiry,
                retired=retired,
                failures=self.worker.failures,
            )

        # Commands from what the lattice will be once in-flight commands land (so they
        # are not sent twice); status from what it is now (so "deployed" means running).
        result = plan_for(self.worker.overlay(observed))
        sent = await self.worker.run(result)
        await self._record(result, sent)
        actual = plan_for(observed) if self.worker.inflight or sent else result
        for name, status in actual.status.items():
            await self._publish_status(name, status.to_dict())
        for rec in records:
            if (
                rec.deployed is None
                and self._statuses.get(rec.name, {}).get("state") != "undeployed"
            ):
                await self._publish_status(
                    rec.name,
                    {
                        "name": rec.name,
                        "version": None,
                        "state": "undeployed",
                        "reason": "",
                        "components": [],
                    },
                )
        return len(sent)

    async def _record(self, result: Plan, sent: list[Command]) -> None:
        """One history entry per app for a round that stopped or removed something of it
        (with each command's cause), or whose replicas were on a host just lost."""
        by_app: dict[str, list[dict[str, str]]] = {}
        for cmd in sent:
            if stops(cmd):
                for app in result.apps_of(cmd):
                    by_app.setdefault(app, []).append(
                        {"command": cmd.describe(), "cause": cmd.reason}
                    )
        lost = set(result.lost_hosts) - self._lost_seen
        self._lost_seen = set(result.lost_hosts)
        losses: dict[str, list[dict[str, str]]] = {}
        for h in sorted(lost):
            host = self.observer.hosts.get(h)
            for wid, inst in (*host.components.items(), *host.providers.items()) if host else ():
                app = naming.owner_app(inst.annotations)
                if app and naming.is_managed(inst.annotations):
                    losses.setdefault(app, []).append(
                        {"command": f"{wid} on {h} lost", "cause": result.losses.get(h, "")}
                    )
        apps = sorted(set(by_app) | set(losses))
        for app in apps:
            await self.store.record(
                app, "reconcile", stopped=losses.get(app, []) + by_app.get(app, [])
            )
        if apps:
            causes = sorted(
                {s["cause"] for a in apps for s in losses.get(a, []) + by_app.get(a, [])}
            )
            self._log.info("reconciliation stopped something", apps=apps, causes=causes)

    def _manifest(self, name: str, entry: dict[str, Any]) -> Manifest:
        key = (name, entry["version"])
        m = self._manifests.get(key)
        if m is None:
            m = self._manifests[key] = Manifest.model_validate(entry["manifest"])
        return m

    # -- status ---------------------------------------------------------------

    async def _publish_status(self, name: str, status: dict[str, Any]) -> None:
        if self._statuses.get(name) == status:
            return
        self._statuses[name] = status
        body = json.dumps(status).encode()
        assert self._status_kv is not None and self.nc is not None
        with contextlib.suppress(Exception):
            await self._status_kv.put(f"app.{name}", body)
        with contextlib.suppress(Exception):
            await self.nc.publish(f"wadm.status.{self.lattice}.{name}", body)

    async def read_status(self, name: str) -> dict[str, Any] | None:
        assert self._status_kv is not None
        try:
            entry = await self._status_kv.get(f"app.{name}")
        except (KeyNotFoundError, NotFoundError):
            return None
        return json.loads(entry.value) if entry.value else None
