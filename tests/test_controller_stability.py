"""A deployed app stays put while the rest of the lattice churns (issue 8, part 3).

Three real hosts (zone=east, east, west) and a real controller run two apps: `shop`, a
counter with 4 instances spread 80/20 over the zones, a keyvalue provider and a link
with inline config; and `echoes`, an echo component spread over every host. Then a
seeded random stream of operations that concern neither app runs for a minute
(`LATTICE_STABILITY_SECONDS` for longer):
foreign providers started and stopped (also with the app's provider image), a foreign
component (the echo app's image) scaled, links and config for other sources put and
deleted, a non-spread label put and deleted, a fourth host joining and leaving, and
calls to the counter. Every command the controller's worker puts on the wire is seen
through its `on_send` seam; none of those that concern the apps may be sent at all —
no stop, no delete, not even a start (a start would mean something was lost first).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from typing import Any

import pytest

from lattice.client import LatticeClient, LatticeError
from lattice.controller import naming
from lattice.controller.commands import (
    Command,
    DeleteConfig,
    DeleteLink,
    PutConfig,
    PutLink,
    StartProvider,
    StopProvider,
    stops,
)
from lattice.controller.run.service import Controller
from tests.test_controller_live import deploy, eventually

pytestmark = pytest.mark.slow

COUNTER = "lattice:examples/counter"
KV_IMAGE = "builtin://keyvalue-nats"
KV = ("wasi", "keyvalue")
IFACES = ["store", "atomics"]
CHURN_SECONDS = float(os.environ.get("LATTICE_STABILITY_SECONDS", "60"))
SEED = int(os.environ.get("LATTICE_STABILITY_SEED", "8"))

SHOP_IDS = {"shop-counter", "shop-kv"}
ECHO_IDS = {"echoes-echo"}
APP_CONFIGS = {naming.config_name("shop", "counter", "bucket")}


def shop(counter_ref: str) -> bytes:
    spread = {
        "type": "spreadscaler",
        "properties": {
            "instances": 4,
            "spread": [
                {"name": "east", "requirements": {"zone": "east"}, "weight": 80},
                {"name": "west", "requirements": {"zone": "west"}, "weight": 20},
            ],
        },
    }
    link = {
        "type": "link",
        "properties": {
            "namespace": "wasi",
            "package": "keyvalue",
            "interfaces": IFACES,
            "target": {
                "name": "kv",
                "config": [{"name": "bucket", "properties": {"bucket": "shopcounts"}}],
            },
        },
    }
    return _manifest(
        "shop",
        [
            {
                "name": "counter",
                "type": "component",
                "properties": {"image": counter_ref},
                "traits": [spread, link],
            },
            {
                "name": "kv",
                "type": "capability",
                "properties": {"image": KV_IMAGE},
                "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
            },
        ],
    )


def echoes(echo_ref: str) -> bytes:
    spread = {"type": "spreadscaler", "properties": {"instances": 3}}
    return _manifest(
        "echoes",
        [
            {
                "name": "echo",
                "type": "component",
                "properties": {"image": echo_ref},
                "traits": [spread],
            }
        ],
    )


def _manifest(name: str, components: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": {"version": "v1"}},
            "spec": {"components": components},
        }
    ).encode()


def concerns_apps(cmd: Command) -> bool:
    """True when a command acts on something the two apps own."""
    ids = SHOP_IDS | ECHO_IDS
    if isinstance(cmd, PutLink | DeleteLink):
        return cmd.source_id in ids
    if isinstance(cmd, PutConfig | DeleteConfig):
        return cmd.name in APP_CONFIGS
    if isinstance(cmd, StartProvider | StopProvider):
        return cmd.provider_id in ids
    return cmd.component_id in ids


async def running(client: LatticeClient) -> dict[str, Counter[str]]:
    """Component/provider id → instances per zone, for the apps' ids."""
    found: dict[str, Counter[str]] = {}
    for h in await client.hosts(wait=0.5):
        inv = await client.inventory(h.id)
        zone = inv.labels.get("zone", "?")
        for c in inv.components:
            if c.id in SHOP_IDS | ECHO_IDS:
                found.setdefault(c.id, Counter())[zone] += c.max_instances
        for p in inv.providers:
            if p["id"] in SHOP_IDS:
                found.setdefault(p["id"], Counter())[zone] += 1
    return found


class Churn:
    """The random stream of unrelated operations; counts what it did by kind."""

    def __init__(
        self, client: LatticeClient, hosts: list[Any], start_host: Any, refs: dict
    ) -> None:
        self.client = client
        self.hosts = hosts
        self.start_host = start_host
        self.refs = refs
        self.rnd = random.Random(SEED)
        self.done: Counter[str] = Counter()
        self.errors: list[str] = []
        self.providers: dict[str, str] = {}  # foreign provider id → host id
        self.extra: Any = None  # the fourth host while it is up
        self.n = 0

    def pick_host(self) -> str:
        pool = [*self.hosts, *([self.extra] if self.extra else [])]
        return self.rnd.choice(pool).host_id

    async def step(self) -> None:
        ops = [
            self.start_foreign_provider,
            self.stop_foreign_provider,
            self.scale_foreign_component,
            self.put_foreign_link,
            self.del_foreign_link,
            self.put_config,
            self.del_config,
            self.put_label,
            self.del_label,
            self.host_join_or_leave,
            self.call_counter,
            self.call_counter,
        ]
        op = self.rnd.choice(ops)
        try:
            await op()
            self.done[op.__name__] += 1
        except LatticeError as exc:  # the op was refused (e.g. nothing to delete): fine
            self.done[f"{op.__name__} (refused)"] += 1
            self.errors.append(f"{op.__name__}: {exc}")

    async def start_foreign_provider(self) -> None:
        if len(self.providers) >= 3:
            return await self.stop_foreign_provider()
        self.n += 1
        pid, host = f"f-kv-{self.n}", self.pick_host()
        await self.client.start_provider(host, KV_IMAGE, pid, wait=60)
        self.providers[pid] = host

    async def stop_foreign_provider(self) -> None:
        if not self.providers:
            return await self.start_foreign_provider()
        pid = self.rnd.choice(sorted(self.providers))
        host = self.providers.pop(pid)
        if self.extra is None and host not in {h.host_id for h in self.hosts}:
            return  # it went with the fourth host
        await self.client.stop_provider(host, pid, wait=30)

    async def scale_foreign_component(self) -> None:
        host, count = self.pick_host(), self.rnd.randint(0, 3)
        await self.client.scale_component(host, self.refs["echo"], "loose-echo", count, wait=60)

    async def put_foreign_link(self) -> None:
        target = self.rnd.choice(sorted(self.providers) or ["f-kv-none"])
        await self.client.put_link("loose-echo", target, *KV, IFACES, replace=True)

    async def del_foreign_link(self) -> None:
        await self.client.del_link("loose-echo", *KV)

    async def put_config(self) -> None:
        await self.client.put_config(f"other-cfg-{self.rnd.randint(1, 3)}", {"k": str(self.n)})

    async def del_config(self) -> None:
        await self.client.del_config(f"other-cfg-{self.rnd.randint(1, 3)}")

    async def put_label(self) -> None:
        await self.client.put_label(self.pick_host(), "tier", self.rnd.choice(["gold", "iron"]))

    async def del_label(self) -> None:
        await self.client.del_label(self.pick_host(), "tier")

    async def host_join_or_leave(self) -> None:
        if self.extra is None:
            self.extra = await self.start_host(labels={"zone": "east", "role": "extra"})
        else:
            extra, self.extra = self.extra, None
            await asyncio.wait_for(extra.stop("leaving"), 30)
            self.providers = {p: h for p, h in self.providers.items() if h != extra.host_id}

    async def call_counter(self) -> None:
        value = await self.client.call("shop-counter", f"{COUNTER}.increment", ["churn"])
        assert "ok" in value, value


async def test_deployed_apps_never_stop_for_unrelated_operations(
    start_host, nats_url: str, lattice_name: str, client: LatticeClient, linked_refs, echo_ref
) -> None:
    hosts = [await start_host(labels={"zone": z}) for z in ("east", "east", "west")]
    # reconciling every 0.2 s (not 1 s) gives a transient bad view more chances to show
    ctl = Controller(nats_url, lattice_name, tick=0.2)
    sent: list[Command] = []
    ctl_started = False
    try:
        await ctl.start()
        ctl_started = True
        await deploy(client, shop(linked_refs["counter"]))
        await deploy(client, echoes(echo_ref))
        for name in ("shop", "echoes"):

            async def is_deployed(name: str = name) -> bool:
                return (await client.model("status", name))["status"]["state"] == "deployed"

            await eventually(is_deployed, timeout=120, what=f"{name} deployed")
        before = await running(client)
        assert before["shop-counter"] == Counter({"east": 3, "west": 1})
        assert sum(before["shop-kv"].values()) == 1 and sum(before["echoes-echo"].values()) == 3
        assert "ok" in await client.call("shop-counter", f"{COUNTER}.increment", ["churn"])

        ctl.worker.on_send.append(lambda cmd: sent.append(cmd) if concerns_apps(cmd) else None)
        churn = Churn(client, hosts, start_host, {"echo": echo_ref})
        states: Counter[str] = Counter()
        deadline = time.monotonic() + CHURN_SECONDS
        while time.monotonic() < deadline:
            await churn.step()
            for name in ("shop", "echoes"):
                states[(await client.model("status", name))["status"]["state"]] += 1
            await asyncio.sleep(churn.rnd.uniform(0.1, 0.6))
        if churn.extra is not None:
            await churn.host_join_or_leave()
        await asyncio.sleep(3.0)  # a round or two after the last operation

        print(f"\nops: {sum(churn.done.values())} {dict(churn.done)}")
        print(f"commands for the apps sent by the controller: {len(sent)}")
        print(f"app states sampled: {dict(states)}")
        stopped = [c.describe() for c in sent if stops(c)]
        assert stopped == [], f"the controller stopped or removed app parts: {stopped}"
        assert sent == [], [c.describe() for c in sent]
        assert set(states) == {"deployed"}, states
        assert sum(churn.done.values()) >= CHURN_SECONDS / 2  # ~1 op per 0.35-1 s
        assert await running(client) == before
        assert "ok" in await client.call("shop-counter", f"{COUNTER}.increment", ["churn"])
    finally:
        if ctl_started:
            await asyncio.wait_for(ctl.stop(), 30)
