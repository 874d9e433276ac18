"""The link hand-off (docs/protocol.md): pure decisions, the SDK's drain, and a swap
across hosts under load with exact accounting.

The cross-host test puts the component on one host and each provider on others, so the
source host, the answering host and the target hosts all learn of a change at different
moments — the arrangement in which an independent check saw calls fail with
"no such link" and one increment counted twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from lattice import codec
from lattice.client import LatticeClient
from lattice.protocol import handoff
from lattice.protocol.handoff import Fail, Miss, Resend, Verb
from lattice.protocol.invocation import ERROR_HEADER, SOURCE_HEADER
from lattice.protocol.links import Link
from providers.sdk import HostData, Provider, operation
from providers.sdk import Link as PLink
from providers.sdk.dispatch import invoke

COUNTER = "lattice:examples/counter"
KV = ("wasi", "keyvalue")
IFACES = ["store", "atomics"]


def lk(target: str, source: str = "comp", name: str = "default") -> Link:
    return Link(
        source_id=source,
        target=target,
        name=name,
        wit_namespace="wasi",
        wit_package="keyvalue",
        interfaces=["store", "atomics"],
    )


# ---------------------------------------------------------------------- pure decisions


def test_notices_put_new_target_before_old_one_drains() -> None:
    old, new = lk("t-redis"), lk("t-vault")
    got = handoff.notices(old, new, {"t-redis", "t-vault"})
    assert [(n.provider_id, n.verb) for n in got] == [("t-vault", Verb.PUT), ("t-redis", Verb.DEL)]
    # a host that runs only the old target tells it to let go; only the new, to take it
    assert [(n.provider_id, n.verb) for n in handoff.notices(old, new, {"t-redis"})] == [
        ("t-redis", Verb.DEL)
    ]
    assert [(n.provider_id, n.verb) for n in handoff.notices(old, new, {"t-vault"})] == [
        ("t-vault", Verb.PUT)
    ]
    assert handoff.notices(old, new, {"other"}) == []
    # a config change on the same target: one put, no delete
    changed = lk("t-redis").model_copy(update={"target_config": ["b"]})
    assert [(n.verb, n.link) for n in handoff.notices(old, changed, {"t-redis"})] == [
        (Verb.PUT, changed)
    ]
    # a provider that is the link's source is told too (messaging delivering to a handler)
    src = lk("comp-x", source="msg")
    assert [(n.provider_id, n.verb) for n in handoff.notices(None, src, {"msg"})] == [
        ("msg", Verb.PUT)
    ]
    assert [(n.provider_id, n.verb) for n in handoff.notices(src, None, {"msg"})] == [
        ("msg", Verb.DEL)
    ]


def test_after_miss_follows_the_link_and_never_loops() -> None:
    moved = lk("t-vault")
    # the link moved: resend to the new target at once, whatever the miss was
    for miss in Miss:
        assert handoff.after_miss("t-redis", miss, moved, "atomics", 1, 5.0) == Resend(moved, 0.0)
    # deleted, or no longer carrying this interface: fail, naming why
    assert isinstance(handoff.after_miss("t-redis", Miss.NOT_LINKED, None, "atomics", 1, 5), Fail)
    narrow = moved.model_copy(update={"interfaces": ["store"]})
    step = handoff.after_miss("t-vault", Miss.NOT_LINKED, narrow, "atomics", 1, 5)
    assert isinstance(step, Fail) and "no link" in step.reason
    # the same target says not-linked: wait a little longer each time, within the deadline
    waits = []
    for attempt in range(1, 5):
        step = handoff.after_miss("t-vault", Miss.NOT_LINKED, moved, "atomics", attempt, 5.0)
        assert isinstance(step, Resend) and step.link == moved
        waits.append(step.wait)
    assert waits == sorted(waits) and waits[0] > 0 and waits[-1] <= handoff.RETRY_MAX_WAIT
    step = handoff.after_miss("t-vault", Miss.NOT_LINKED, moved, "atomics", 1, 0.01)
    assert isinstance(step, Fail) and "does not hold the link" in step.reason
    # the same target and nobody answers: it is not running, fail fast
    step = handoff.after_miss("t-vault", Miss.NO_RESPONDERS, moved, "atomics", 1, 5.0)
    assert isinstance(step, Fail) and "t-vault is not running" in step.reason
    # a link that keeps moving is bounded
    step = handoff.after_miss("a", Miss.NOT_LINKED, moved, "atomics", handoff.MAX_RESENDS, 9)
    assert isinstance(step, Fail) and "kept moving" in step.reason


# ---------------------------------------------------------------------- the SDK's side


class Slow(Provider):
    """Records hook order; `wait` blocks until released, to hold a call in flight."""

    def __init__(self, hd: HostData) -> None:
        super().__init__(hd)
        self.events: list[tuple[str, str]] = []
        self.release = asyncio.Event()
        self.open: set[str] = set()
        self.put_delay = 0.0  # seconds on_link_put takes (a backend being connected)

    async def on_link_put(self, link: PLink) -> None:
        await asyncio.sleep(self.put_delay)
        self.open.add(link.target_config.get("db", ""))
        self.events.append(("put", link.target_config.get("db", "")))

    async def on_link_del(self, link: PLink) -> None:
        self.open.discard(link.target_config.get("db", ""))
        self.events.append(("del", link.target_config.get("db", "")))

    @operation("wasi:keyvalue/store.bucket.get", params=("bucket", "key"))
    async def get(self, link: PLink, args: list[Any]) -> dict[str, Any]:
        db = link.target_config.get("db", "")
        if args[1] == "wait":
            await self.release.wait()
        # the client this call started with must still be open when it finishes
        return {"ok": db.encode()} if db in self.open else {"err": {"other": "closed"}}


def plink(db: str, source: str = "comp") -> PLink:
    return PLink(
        source_id=source,
        target="slow",
        wit_namespace="wasi",
        wit_package="keyvalue",
        interfaces=["store"],
        target_config={"db": db},
    )


async def get(p: Provider, key: str, source: str = "comp") -> tuple[str | None, Any]:
    headers, body = await invoke(
        p, "wasi:keyvalue/store.bucket.get", {SOURCE_HEADER: source}, codec.pack(["", key])
    )
    return (headers or {}).get(ERROR_HEADER), codec.unpack(body)


@pytest.fixture
def slow() -> Slow:
    hd = HostData(lattice="l", nats_url="nats://x", provider_id="slow", host_id="H")
    return Slow(hd)


async def test_changed_link_waits_for_calls_in_flight(slow: Slow) -> None:
    await slow.add_link(plink("a"))
    held = asyncio.create_task(get(slow, "wait"))
    await asyncio.sleep(0.05)
    change = asyncio.create_task(slow.add_link(plink("b")))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(get(slow, "k"))  # arrives during the change
    await asyncio.sleep(0.05)
    assert not change.done() and not queued.done() and slow.events == [("put", "a")]
    slow.release.set()
    assert await held == (None, {"ok": b"a"})  # finished on the client it started with
    await change
    assert await queued == (None, {"ok": b"b"})  # then served over the new link
    assert slow.events == [("put", "a"), ("del", "a"), ("put", "b")]


async def test_deleted_link_drains_then_is_not_linked(slow: Slow) -> None:
    slow.link_drain_seconds = 0.2
    await slow.add_link(plink("a"))
    held = asyncio.create_task(get(slow, "wait"))
    await asyncio.sleep(0.02)
    assert await slow.remove_link(plink("a").key) is not None
    assert await get(slow, "k") == (None, {"ok": b"a"})  # still served while draining
    await asyncio.sleep(0.3)
    kind, body = await get(slow, "k")
    assert kind == "not-linked" and "nothing was done" in body["message"]
    assert ("del", "a") not in slow.events  # the call in flight still holds it
    slow.release.set()
    assert await held == (None, {"ok": b"a"})
    await slow.drained()
    assert slow.events[-1] == ("del", "a")


async def test_put_during_drain_keeps_the_link(slow: Slow) -> None:
    slow.link_drain_seconds = 0.2
    await slow.add_link(plink("a"))
    await slow.remove_link(plink("a").key)
    await slow.add_link(plink("a"))  # swapped back before the drain ended
    await asyncio.sleep(0.3)
    assert await get(slow, "k") == (None, {"ok": b"a"})
    assert slow.events == [("put", "a")]


async def test_missing_link_is_resolved_once_for_concurrent_calls(slow: Slow) -> None:
    asked: list[Any] = []

    async def resolver(key: Any) -> PLink | None:
        asked.append(key)
        await asyncio.sleep(0.05)
        return plink("r") if key.source_id == "comp" else None

    slow.resolver = resolver
    results = await asyncio.gather(*(get(slow, "k") for _ in range(10)))
    assert results == [(None, {"ok": b"r"})] * 10 and len(asked) == 1
    kind, _ = await get(slow, "k", source="stranger")
    assert kind == "not-linked"


async def test_a_stale_resolve_answer_never_undoes_a_newer_put(slow: Slow) -> None:
    """The prepare reaches a target before the bucket changes, so a resolve answered
    from the bucket meanwhile carries the *old* link. It must not be put back in force
    over the new one (seen: a config change on the same target reverted 20 ms later, and
    every later call counted in the old database)."""
    answer = asyncio.Event()

    async def resolver(key: Any) -> PLink | None:
        await answer.wait()
        return plink("old")

    slow.resolver = resolver
    call = asyncio.create_task(get(slow, "k"))  # finds no link: asks the host
    await asyncio.sleep(0.02)
    await slow.add_link(plink("new"))  # the prepare arrives while the question is out
    answer.set()
    assert await call == (None, {"ok": b"new"})
    assert slow.links[plink("new").key] == plink("new")
    assert slow.events == [("put", "new")]


async def test_a_call_during_a_change_waits_for_it_instead_of_resolving(slow: Slow) -> None:
    asked: list[Any] = []

    async def resolver(key: Any) -> PLink | None:
        asked.append(key)
        return plink("old")

    slow.resolver = resolver
    await slow.add_link(plink("a"))
    slow.put_delay = 0.2
    change = asyncio.create_task(slow.add_link(plink("b")))
    await asyncio.sleep(0.05)  # "a" released, "b" being put: the key holds no link now
    assert plink("a").key not in slow.links and not change.done()
    assert await get(slow, "k") == (None, {"ok": b"b"}) and asked == []
    await change


# ---------------------------------------------------------------------- across hosts


class Load:
    """Callers incrementing one key without pause; every outcome kept."""

    def __init__(self, client: LatticeClient, key: str, workers: int) -> None:
        self.client, self.key = client, key
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(workers)]

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = await self.client.call("counter", f"{COUNTER}.increment", [self.key])
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if isinstance(got, dict) and "ok" in got:
                self.ok += 1
            else:
                self.failures.append(str(got))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest.mark.slow
async def test_swap_across_hosts_fails_no_call_and_counts_exactly(
    start_host, client: LatticeClient, redis_server, vault_server, nats_url, linked_refs
) -> None:
    comp_host = await start_host(labels={"zone": "east"})
    host_b = await start_host(labels={"zone": "east"})
    host_c = await start_host(labels={"zone": "west"})
    await client.put_config("redis", {"url": redis_server.url(2)})
    await client.put_config(
        "vault",
        {"addr": vault_server.addr, "mount": "secret", "token": vault_server.token},
        ["token"],
    )
    bucket = f"handoff{uuid.uuid4().hex[:8]}"
    await client.put_config("natskv", {"bucket": bucket})
    # every provider away from the component; t-nats on two hosts (one queue group)
    await client.start_provider(host_b.host_id, "builtin://keyvalue-redis", "t-redis")
    await client.start_provider(host_c.host_id, "builtin://keyvalue-vault", "t-vault")
    await client.start_provider(host_b.host_id, "builtin://keyvalue-nats", "t-nats")
    await client.start_provider(host_c.host_id, "builtin://keyvalue-nats", "t-nats")
    await client.scale_component(comp_host.host_id, linked_refs["counter"], "counter", 8)
    config = {"t-redis": "redis", "t-vault": "vault", "t-nats": "natskv"}
    for h in (host_b, host_c):
        for _ in range(200):
            if all(p.healthy for p in h.providers.running.values()) and h.providers.running:
                break
            await asyncio.sleep(0.05)
    await client.put_link("counter", "t-redis", *KV, IFACES, target_config=["redis"])
    key = f"hits-{uuid.uuid4().hex[:6]}"
    assert (await client.call("counter", f"{COUNTER}.get", [key])) == {"ok": None}

    load = Load(client, key, workers=16)
    order = ["t-vault", "t-nats", "t-redis"] * 2
    swaps = Counter[str]()
    for target in order:
        await asyncio.sleep(1.0)
        await client.put_link(
            "counter", target, *KV, IFACES, target_config=[config[target]], replace=True
        )
        swaps[target] += 1
    await asyncio.sleep(1.0)
    await load.stop()

    assert load.failures == [], Counter(load.failures).most_common(5)
    assert load.ok > 100, f"only {load.ok} calls in {len(order) + 1} s"
    # exact accounting: read each backend's count through the component itself
    total = 0
    for target in ("t-redis", "t-vault", "t-nats"):
        await client.put_link(
            "counter", target, *KV, IFACES, target_config=[config[target]], replace=True
        )
        got = await client.call("counter", f"{COUNTER}.get", [key])
        assert "ok" in got, got
        total += got["ok"] or 0
    assert total == load.ok, f"backends hold {total}, {load.ok} calls were acknowledged"
    # and the component was never restarted
    assert comp_host.components.running["counter"].pool.discarded == 0
    t0 = time.monotonic()
    await client.del_link("counter", *KV)
    got = await client.call("counter", f"{COUNTER}.increment", [key])
    assert "no link" in got["err"] and time.monotonic() - t0 < 5


@pytest.mark.slow
async def test_a_source_host_with_a_stale_copy_still_reaches_the_new_target(
    start_host, client: LatticeClient, linked_refs
) -> None:
    """A host that missed a swap (its watcher behind, as while it reconnects) routes to
    the old target; once that target has drained the link it answers `not-linked`, and
    the bridge reads the bucket and sends the call to the new target. No call fails."""
    comp_host = await start_host()
    prov_host = await start_host()
    suffix = uuid.uuid4().hex[:6]
    for name in ("a", "b"):
        await client.put_config(f"kv-{name}", {"bucket": f"stale{name}{suffix}"})
        await client.start_provider(prov_host.host_id, "builtin://keyvalue-nats", f"kv-{name}")
    for _ in range(200):
        running = prov_host.providers.running
        if len(running) == 2 and all(p.healthy for p in running.values()):
            break
        await asyncio.sleep(0.05)
    await client.scale_component(comp_host.host_id, linked_refs["counter"], "counter", 2)
    await client.put_link("counter", "kv-a", *KV, IFACES, target_config=["kv-a"])
    assert await client.call("counter", f"{COUNTER}.increment", ["k"]) == {"ok": 1}

    await comp_host.state.stop()  # the source host stops seeing changes
    try:
        await client.put_link("counter", "kv-b", *KV, IFACES, target_config=["kv-b"], replace=True)
        assert comp_host.state.links[("counter", *KV, "default")].target == "kv-a"
        # within the drain, the old target still serves what the stale host sends it
        assert await client.call("counter", f"{COUNTER}.increment", ["k"]) == {"ok": 2}
        await asyncio.sleep(6.0)  # past the old target's drain (5 s)
        # now kv-a holds no link: not-linked, the bridge re-reads, kv-b counts from 1
        assert await client.call("counter", f"{COUNTER}.increment", ["k"]) == {"ok": 1}
        assert await client.call("counter", f"{COUNTER}.increment", ["k"]) == {"ok": 2}
    finally:
        comp_host.bridge.links = comp_host.state.links
    assert await client.call("counter", f"{COUNTER}.increment", ["k"]) == {"ok": 3}


async def test_a_change_answered_by_a_host_whose_watcher_is_behind_still_succeeds(
    start_host, client: LatticeClient
) -> None:
    """The write is stored either way; a host whose own copy lags (reconnecting, or here
    stopped) must not report a stored link or config as failed (seen: `link.put failed:
    TimeoutError` when the lattice-wide request reached such a host)."""
    host = await start_host()
    await host.state.stop()
    suffix = uuid.uuid4().hex[:6]
    await client.put_config(f"lag-{suffix}", {"bucket": f"lag{suffix}"})
    await client.put_link("lagger", f"kv-{suffix}", *KV, IFACES, target_config=[f"lag-{suffix}"])
    stored = await host.state.fetch_link(("lagger", *KV, "default"))
    assert stored is not None and stored.target == f"kv-{suffix}"
    assert ("lagger", *KV, "default") not in host.state.links  # its copy is indeed behind
