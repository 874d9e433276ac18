"""messaging-nats: the provider as a real process, then pingpong end to end on a real host.

Provider level: one `python -m providers.messaging_nats` process (tests/servers.py
`ProviderProcess`) is driven over NATS exactly as a host drives it: links arrive in the
host data and as `linkdefs.put/del`, health is polled, and a "component" is just a NATS
responder on `{lattice}.{component}.rpc.wasmcloud:messaging/handler.handle-message`
(`FakeComponent`), which is all the provider can see of one. A second nats-server
(`other`) stands in for a link's `url`; it is stopped and restarted to check health and
recovery.

End to end: a host runs kv-redis, messaging-nats and the `pingpong` component, linked
both ways; NATS requests on `ping.x` get "pong 1", "pong 2", … back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
import structlog
import structlog.testing
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from lattice import codec, natsd
from lattice.client import LatticeClient
from lattice.protocol.invocation import ERROR_HEADER, ErrorKind, InvocationError
from providers.messaging_nats.connections import Connection
from providers.messaging_nats.delivery import Delivery
from providers.messaging_nats.settings import SourceSettings
from providers.sdk import HostData, Link, LinkError, Provider
from tests.servers import ProviderProcess, RedisServer, control, rpc

PROVIDER = "msg"
HANDLE = "wasmcloud:messaging/handler.handle-message"
PUBLISH = "wasmcloud:messaging/consumer.publish"
REQUEST = "wasmcloud:messaging/consumer.request"


def source_link(
    component: str, subscriptions: str, *, name: str | None = None, **config: str
) -> Link:
    """A link messaging-nats → component (the provider delivers to `handler`).

    A link's identity is (source, namespace, package, name), so each of the provider's
    links to a different component needs its own link name: here the component id.
    """
    return Link.model_validate(
        {
            "source_id": PROVIDER,
            "target": component,
            "name": name or component,
            "wit_namespace": "wasmcloud",
            "wit_package": "messaging",
            "interfaces": ["handler"],
            "source_config": {"subscriptions": subscriptions, **config},
        }
    )


def consumer_link(component: str, **config: str) -> Link:
    """A link component → messaging-nats (the component publishes and requests)."""
    return Link.model_validate(
        {
            "source_id": component,
            "target": PROVIDER,
            "wit_namespace": "wasmcloud",
            "wit_package": "messaging",
            "interfaces": ["consumer"],
            "target_config": config,
        }
    )


@dataclass
class FakeComponent:
    """A NATS responder where a component's handle-message export would be."""

    nc: NATS
    lattice: str
    component_id: str
    delay: float = 0.0
    answer: Any = field(default_factory=lambda: {"ok": None})
    error_kind: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeComponent:
        subject = f"{self.lattice}.{self.component_id}.rpc.{HANDLE}"
        self.sub = await self.nc.subscribe(subject, cb=self._on_call)
        await self.nc.flush()
        return self

    async def _on_call(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve(msg))  # concurrently, like a component's pool
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            (arg,) = codec.unpack(msg.data)
            self.received.append(arg)
            self.headers.append(dict(msg.headers or {}))
            self.arrived.set()
            await asyncio.sleep(self.delay)
            if self.error_kind is not None:
                body = codec.pack({"kind": self.error_kind, "message": "it trapped"})
                await self.nc.publish(msg.reply, body, headers={ERROR_HEADER: self.error_kind})
            else:
                await msg.respond(codec.pack(self.answer))
        finally:
            self.running -= 1

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.received]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), deadline - time.monotonic())
        assert len(self.received) >= count, f"{self.component_id}: {self.received!r:.300}"
        return self.received


@dataclass
class Harness:
    nc: NATS
    lattice: str
    proc: ProviderProcess
    other: natsd.EmbeddedNats

    async def ctl(self, verb: str, body: Any) -> Any:
        return await control(self.nc, f"{self.proc.ctl}.{verb}", body)

    async def put(self, link: Link) -> Any:
        return await self.ctl("linkdefs.put", link.model_dump())

    async def delete(self, link: Link) -> Any:
        body = {k: getattr(link, k) for k in ("source_id", "target", "name")}
        body |= {"wit_namespace": "wasmcloud", "wit_package": "messaging"}
        return await self.ctl("linkdefs.del", body)

    async def health(self) -> dict[str, Any]:
        reply = await self.ctl("health", {})
        assert reply.success, reply.message
        return dict(reply.response)

    async def call(self, op: str, args: list[Any], source: str = "comp-c") -> Any:
        return await rpc(self.nc, self.lattice, PROVIDER, op, args, source=source)

    def component(self, component_id: str, **kw: Any) -> FakeComponent:
        return FakeComponent(self.nc, self.lattice, component_id, **kw)

    async def log_lines(self, text: str, timeout: float = 3.0) -> list[dict[str, Any]]:
        """The provider's JSON log lines containing `text` (waiting for at least one)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                json.loads(line)
                for line in self.proc.stderr().splitlines()
                if text in line and line.startswith("{")
            ]
            if lines or time.monotonic() > deadline:
                return lines
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def mp(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    d = tmp_path_factory.mktemp("messaging")
    other = natsd.EmbeddedNats("127.0.0.1", natsd.free_port(), d / "js", d / "other.log")
    await other.start()
    nc = await nats.connect(nats_url)
    lattice = f"m{uuid.uuid4().hex[:8]}"
    host_data = HostData(
        lattice=lattice,
        nats_url=nats_url,
        provider_id=PROVIDER,
        host_id="NTESTHOST",
        link_drain_seconds=0.2,
        link_definitions=[
            source_link("comp-a", "t1.a,t1.b.*", name="default"),
            consumer_link("comp-c"),
        ],
        log_level="debug",
    )
    proc = ProviderProcess("providers.messaging_nats", host_data, d / "provider.log")
    await proc.start()
    try:
        await proc.wait_ready(nc)
        yield Harness(nc, lattice, proc, other)
    finally:
        await proc.stop()
        await nc.close()
        await other.stop()


# ---------------------------------------------------------------------- SDK: source links


class _Recorder(Provider):
    async def on_start(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def on_source_link_put(self, link: Link) -> None:
        if link.source_config.get("refuse"):
            raise ValueError("refused on purpose")
        self.events.append(("put", link.target))

    async def on_source_link_del(self, link: Link) -> None:
        self.events.append(("del", link.target))


async def test_sdk_keeps_source_links_apart_from_target_links() -> None:
    hd = HostData(lattice="l", nats_url="nats://127.0.0.1:1", provider_id=PROVIDER, host_id="H")
    p = _Recorder(hd)
    await p.on_start()
    out = source_link("comp-s", "a.b")
    await p.add_link(out)
    await p.add_link(out)  # the same link again: a no-op
    await p.add_link(consumer_link("comp-s"))
    assert dict(p.source_links) == {out.key: out} and len(p.links) == 1
    assert p.find_link(PROVIDER, "comp-s", PUBLISH) is None  # never used to serve calls
    changed = source_link("comp-t", "a.b", name="comp-s")  # same identity, new target
    await p.add_link(changed)
    assert p.events == [("put", "comp-s"), ("del", "comp-s"), ("put", "comp-t")]
    with pytest.raises(LinkError, match="refused on purpose"):
        await p.add_link(source_link("comp-r", "a.b", refuse="yes"))
    assert await p.remove_link(changed.key) == changed
    assert await p.remove_link(changed.key) is None
    assert p.events[-1] == ("del", "comp-t") and not p.source_links
    plain = Provider(hd)  # a provider that ignores source links accepts them
    await plain.add_link(out)
    assert plain.source_links[out.key] == out


# ---------------------------------------------------------------------- source role


async def test_delivers_each_message_to_the_component(mp: Harness) -> None:
    comp = await mp.component("comp-a").start()
    await mp.nc.publish("t1.a", b"one")
    await mp.nc.publish("t1.b.x", b"two", reply="my.inbox")
    await mp.nc.publish("t1.c", b"not subscribed")
    await mp.nc.publish("t1.b.x.y", b"not matched either")
    received = await comp.wait_for(2)
    await asyncio.sleep(0.2)
    assert sorted(received, key=lambda m: m["body"]) == [
        {"subject": "t1.a", "body": b"one", "reply-to": None},
        {"subject": "t1.b.x", "body": b"two", "reply-to": "my.inbox"},
    ]
    assert all(h["source-id"] == PROVIDER and h["link-name"] == "default" for h in comp.headers)


async def test_queue_group_delivers_each_message_once(mp: Harness) -> None:
    workers = [await mp.component(f"worker-{i}").start() for i in (1, 2)]
    audit = await mp.component("audit").start()
    for w in workers:
        assert (await mp.put(source_link(w.component_id, "jobs.>", queue_group="q"))).success
    assert (await mp.put(source_link("audit", "jobs.>"))).success  # no group: sees all
    sent = [f"job {i}".encode() for i in range(40)]
    for body in sent:
        await mp.nc.publish("jobs.new", body)
    await audit.wait_for(40)
    await asyncio.sleep(0.2)
    got = workers[0].bodies() + workers[1].bodies()
    assert sorted(got) == sorted(sent)  # every message once across the group
    assert all(w.received for w in workers)  # and both members took some
    assert sorted(audit.bodies()) == sorted(sent)
    for link in (*(source_link(w.component_id, "x") for w in workers), source_link("audit", "x")):
        await mp.delete(link)


async def test_component_failures_are_logged_and_delivery_goes_on(mp: Harness) -> None:
    refusing = await mp.component("refuser", answer={"err": "no thanks"}).start()
    trapping = await mp.component("trapper", error_kind="trap").start()
    for comp in ("refuser", "trapper", "ghost"):  # ghost: nothing serves it
        assert (await mp.put(source_link(comp, f"fail.{comp}"))).success
    for comp in ("refuser", "trapper", "ghost"):
        await mp.nc.publish(f"fail.{comp}", b"secret payload")
    await refusing.wait_for(1)
    await trapping.wait_for(1)
    (refused,) = await mp.log_lines("component returned an error")
    assert refused["component_id"] == "refuser" and refused["error"] == "no thanks"
    assert refused["provider_id"] == PROVIDER and refused["subject"] == "fail.refuser"
    (trapped,) = await mp.log_lines("component call failed")
    assert trapped["component_id"] == "trapper" and trapped["kind"] == "trap"
    (ghost,) = await mp.log_lines("no responders")
    assert ghost["component_id"] == "ghost" and ghost["level"] == "error"
    assert "secret payload" not in mp.proc.stderr()  # bodies are never logged
    await mp.nc.publish("fail.refuser", b"again")
    await refusing.wait_for(2)
    assert (await mp.health())["healthy"]


async def test_calls_are_concurrent_but_bounded(mp: Harness) -> None:
    slow = await mp.component("slow", delay=0.1).start()
    assert (await mp.put(source_link("slow", "slow.in", max_in_flight="3"))).success
    for i in range(12):
        await mp.nc.publish("slow.in", str(i).encode())
    t0 = time.monotonic()
    await slow.wait_for(12)
    assert slow.most_running == 3
    assert time.monotonic() - t0 < 1.0  # 4 rounds of 0.1 s, not 12
    assert sorted(slow.bodies(), key=int) == [str(i).encode() for i in range(12)]


async def test_overflow_is_dropped_with_a_log_line_never_silently(mp: Harness) -> None:
    """In process, with a tiny backlog: what does not fit is counted and logged."""
    slow = await mp.component("overflow", delay=0.3).start()
    link = source_link("overflow", "over.in", max_in_flight="1")
    delivery = Delivery(
        link=link,
        settings=SourceSettings.parse(link.source_config),
        conn=Connection("lattice", mp.nc),
        lattice_nc=mp.nc,
        lattice=mp.lattice,
        provider_id=PROVIDER,
        timeout=5.0,
        log=structlog.get_logger("test"),
    )
    delivery.max_backlog = 2
    delivery.drop_report_interval = 0.1
    with structlog.testing.capture_logs() as logs:
        await delivery.start(1.0)
        for i in range(10):
            await mp.nc.publish("over.in", str(i).encode())
        await slow.wait_for(3)  # one in flight + two from the backlog
        await delivery.wait_idle(5.0)
        await delivery.stop()
    assert slow.bodies() == [b"0", b"1", b"2"]
    assert (delivery.delivered, delivery.dropped) == (3, 7)
    dropped = [e for e in logs if e["event"].startswith("message")]
    assert dropped[0]["event"] == "message dropped" and dropped[0]["why"] == "backlog full"
    assert dropped[0]["component_id"] == "overflow" and dropped[0]["total"] == 1
    summary = [e for e in logs if e["event"] == "messages dropped"]
    assert sum(e["count"] for e in summary) == 6 and summary[-1]["total"] == 7


async def test_link_del_stops_delivery_and_put_resumes_it(mp: Harness) -> None:
    comp = await mp.component("comp-d").start()
    link = source_link("comp-d", "del.me")
    assert (await mp.put(link)).success
    await mp.nc.publish("del.me", b"1")
    await comp.wait_for(1)
    reply = await mp.delete(link)
    assert reply.success and "deleted" in reply.message
    await mp.nc.publish("del.me", b"2")
    await asyncio.sleep(0.3)
    assert comp.bodies() == [b"1"]
    assert (await mp.put(link)).success
    await mp.nc.publish("del.me", b"3")
    await comp.wait_for(2)
    assert comp.bodies() == [b"1", b"3"]
    # a changed link replaces the old subscriptions
    assert (await mp.put(source_link("comp-d", "del.moved"))).success
    await mp.nc.publish("del.me", b"4")
    await mp.nc.publish("del.moved", b"5")
    await comp.wait_for(3)
    await asyncio.sleep(0.2)
    assert comp.bodies() == [b"1", b"3", b"5"]
    await mp.delete(link)


async def test_misconfigured_links_are_refused(mp: Harness) -> None:
    reply = await mp.put(source_link("comp-x", " , "))
    assert not reply.success and "no 'subscriptions'" in reply.message
    reply = await mp.put(source_link("comp-x", "a..b"))
    assert not reply.success and "empty token" in reply.message
    reply = await mp.put(source_link("comp-x", "ok", url="http://user:pw@h:1"))
    assert not reply.success and "nats://" in reply.message and "pw" not in reply.message
    wrong = source_link("comp-x", "ok").model_copy(update={"wit_package": "keyvalue"})
    reply = await mp.put(wrong)
    assert not reply.success and "wasmcloud:messaging links only" in reply.message
    stranger = source_link("comp-x", "ok").model_copy(update={"source_id": "someone"})
    assert not (await mp.put(stranger)).success


# ---------------------------------------------------------------------- target role


async def test_consumer_publish(mp: Harness) -> None:
    sub = await mp.nc.subscribe("out.x")
    msg = {"subject": "out.x", "body": b"hello", "reply-to": "back.here"}
    assert await mp.call(PUBLISH, [msg]) == {"ok": None}
    got = await sub.next_msg(timeout=2)
    assert (got.data, got.reply) == (b"hello", "back.here")
    assert await mp.call(PUBLISH, [{"subject": "out.x", "body": b""}]) == {"ok": None}
    assert (await sub.next_msg(timeout=2)).reply == ""
    await sub.unsubscribe()
    err = await mp.call(PUBLISH, [{"subject": "out.*", "body": b"", "reply-to": None}])
    assert "wildcard" in err["err"]
    with pytest.raises(InvocationError) as exc:
        await mp.call(PUBLISH, [{"subject": "out.x", "body": "not bytes"}])
    assert exc.value.kind == ErrorKind.BAD_ARGUMENT
    with pytest.raises(InvocationError) as exc:
        await mp.call(PUBLISH, [msg], source="unlinked")
    assert exc.value.kind == ErrorKind.NOT_LINKED


async def test_consumer_request(mp: Harness) -> None:
    async def echo(msg: Msg) -> None:
        await msg.respond(b"re: " + msg.data)

    sub = await mp.nc.subscribe("svc.echo", cb=echo)
    silent = await mp.nc.subscribe("svc.silent")
    await mp.nc.flush()
    ok = (await mp.call(REQUEST, ["svc.echo", b"hi", 2000]))["ok"]
    assert ok["body"] == b"re: hi" and ok["reply-to"] is None and ok["subject"]
    t0 = time.monotonic()
    assert await mp.call(REQUEST, ["svc.none", b"hi", 5000]) == {"err": "no responders on svc.none"}
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    err = (await mp.call(REQUEST, ["svc.silent", b"hi", 200]))["err"]
    assert err.startswith("timed out after 200 ms")
    assert 0.15 < time.monotonic() - t0 < 1.5
    await sub.unsubscribe()
    await silent.unsubscribe()


# ---------------------------------------------------------------------- another server


async def test_other_server_health_and_recovery(mp: Harness) -> None:
    other = mp.other
    onc = await nats.connect(other.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        comp = await mp.component("far").start()
        assert (await mp.put(source_link("far", "far.in", url=other.url))).success
        assert (await mp.put(consumer_link("comp-far", url=other.url))).success
        health = await mp.health()
        assert health["healthy"] and "2 nats connection(s)" in health["message"]

        await onc.publish("far.in", b"from afar")  # the message is on the other server,
        await comp.wait_for(1)  # the call goes over the lattice
        sub = await onc.subscribe("far.out")
        await onc.flush()
        msg = {"subject": "far.out", "body": b"there", "reply-to": None}
        assert await mp.call(PUBLISH, [msg], source="comp-far") == {"ok": None}
        assert (await sub.next_msg(timeout=2)).data == b"there"
        assert (await mp.call(PUBLISH, [msg])) == {"ok": None}  # comp-c: lattice NATS

        await other.stop()
        for _ in range(50):
            health = await mp.health()
            if not health["healthy"]:
                break
            await asyncio.sleep(0.1)
        assert not health["healthy"]
        assert f"nats://127.0.0.1:{other.port} not connected" in health["message"]
        assert "far->far" in health["message"] and "comp-far/default" in health["message"]
        err = await mp.call(PUBLISH, [msg], source="comp-far")
        assert "not connected" in err["err"]

        await other.start()
        for _ in range(100):
            if (await mp.health())["healthy"] and onc.is_connected:
                break
            await asyncio.sleep(0.1)
        assert (await mp.health())["healthy"]
        for _ in range(50):  # re-subscribed after the reconnect
            await onc.publish("far.in", b"back")
            await asyncio.sleep(0.1)
            if len(comp.received) > 1:
                break
        assert comp.bodies()[1] == b"back"
        await mp.delete(source_link("far", "x"))
        await mp.ctl(
            "linkdefs.del",
            {"source_id": "comp-far", "target": PROVIDER}
            | {"wit_namespace": "wasmcloud", "wit_package": "messaging"},
        )
        for _ in range(50):  # the target link drains first (link hand-off)
            health = await mp.health()
            if "1 nats connection(s)" in health["message"]:
                break
            await asyncio.sleep(0.1)
        assert health["healthy"] and "1 nats connection(s)" in health["message"]
    finally:
        await onc.close()


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def pingpong_ref() -> str:
    from components.build import build

    return build("pingpong").as_uri()


async def test_pingpong_end_to_end(
    start_host: Any,
    client: LatticeClient,
    nats_url: str,
    redis_server: RedisServer,
    pingpong_ref: str,
) -> None:
    host = await start_host()
    await client.put_config("pp-redis", {"url": redis_server.url(3)})
    await client.put_config("pp-subs", {"subscriptions": "ping.*"})
    await client.start_provider(host.host_id, "builtin://keyvalue-redis", "kv-redis")
    await client.start_provider(host.host_id, "builtin://messaging-nats", "messaging")
    await client.scale_component(host.host_id, pingpong_ref, "pingpong", 4)
    await client.put_link(
        "pingpong", "kv-redis", "wasi", "keyvalue", ["store", "atomics"], target_config=["pp-redis"]
    )
    await client.put_link("pingpong", "messaging", "wasmcloud", "messaging", ["consumer"])
    await client.put_link(
        "messaging", "pingpong", "wasmcloud", "messaging", ["handler"], source_config=["pp-subs"]
    )
    nc = await nats.connect(nats_url)
    try:
        for _ in range(100):  # the provider gets the link pushed just after put_link returns
            try:
                first = await nc.request("ping.x", b"ping", timeout=10)
                break
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("messaging-nats never subscribed to ping.*")
        assert first.data == b"pong 1"
        for n in (2, 3):
            assert (await nc.request("ping.y", b"ping", timeout=10)).data == f"pong {n}".encode()

        # no reply-to: the pong goes to subject "pong"
        pongs = await nc.subscribe("pong")
        await nc.publish("ping.z", b"ping")
        assert (await pongs.next_msg(timeout=10)).data == b"pong 4"

        # not a ping: the component's err is logged by the provider, nothing breaks
        await nc.publish("ping.x", b"pang")
        output = host.providers.running["messaging"].output
        for _ in range(100):
            errors = [line for line in output if "expected ping" in line]
            if errors:
                break
            await asyncio.sleep(0.05)
        (line,) = errors
        logged = json.loads(line)
        assert logged["level"] == "error" and logged["component_id"] == "pingpong"
        assert logged["provider_id"] == "messaging" and "got b'pang'" in logged["error"]

        # many at once: handled concurrently, each counted exactly once
        replies = await asyncio.gather(
            *(nc.request(f"ping.{i}", b"ping", timeout=10) for i in range(20))
        )
        assert sorted(int(r.data.split()[1]) for r in replies) == list(range(5, 25))
    finally:
        await nc.close()
