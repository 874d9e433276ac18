"""`python -m bench soak`: load through links while links swap, hosts die and backends restart.

A Jepsen-style harness: it drives the lattice, injects faults, and at the end checks
invariants instead of following a script.

The lattice: H `lattice up` processes (H >= 3) on one nats-server, and a controller in
this process. Host 0 (`role=source`) runs the sources, the counter (through wasi:keyvalue)
and the caller (through a component-to-component link to the greeter); the other hosts
(`role=backend`) run the greeter and the three keyvalue providers, one instance of each
on every backend host, so no source ever shares a host with what it calls. The app is
one manifest (`soak`); the keyvalue link is put by hand, since it is the one that swaps.

Meanwhile, on a schedule: `link put --replace` cycles the counter's keyvalue link Redis ->
Vault -> NATS KV every `--swap-every` seconds; every `--fault-every` seconds the next
fault of the cycle: SIGKILL a provider process; SIGKILL a backend host (restarted a few
seconds later); restart Redis (with an append-only file, so acknowledged writes survive,
while the link points elsewhere); scale the greeter up, or down, by deploying a new
manifest version.

Invariants checked at the end:
- every failed call was in flight at a process killed by the harness (a host or a
  provider), or timed out on the caller's own deadline for that reason; anything else
  is a failure of the lattice;
- accounting: the three backends together hold acknowledged <= total <= acknowledged +
  indeterminate (timeouts) increments — exactly the acknowledged count when nothing timed
  out;
- the controller sent no stop or delete command for the app that its manifest did not
  ask for (the greeter's scale-downs are asked for; replicas on a killed host are not
  stopped, they are lost);
- heal time: after a backend host is killed, its greeter replicas run on the others
  within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.invoke import print_table, save
from lattice import natsd
from lattice.client import LatticeClient, LatticeError
from lattice.controller.commands import Command, stops
from lattice.controller.run.service import Controller
from lattice.protocol.invocation import InvocationError

APP = "soak"
COUNTER_FN = "lattice:examples/counter"
RELAY_FN = "lattice:examples/relay.relay-hello"
KV = ("wasi", "keyvalue")
KV_IFACES = ["store", "atomics"]
BACKENDS = ("redis", "vault", "nats")  # the swap cycle
ROOT = Path(__file__).resolve().parent.parent
HEAL_GOAL_S = 5.0


@dataclass
class Settings:
    minutes: float = 10.0
    hosts: int = 3
    callers: int = 32
    swap_every: float = 2.0
    fault_every: float = 12.0
    call_timeout: float = 5.0
    seed: int = 1


@dataclass
class CallRecord:
    fn: str
    started: float
    ended: float
    outcome: str  # ok | failed | timeout
    message: str = ""


@dataclass
class Fault:
    kind: str
    at: float
    what: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    settings: Settings
    calls: list[CallRecord]
    faults: list[Fault]
    swaps: int
    acknowledged: int
    indeterminate: int
    backend_totals: dict[str, int]
    stops: list[dict[str, Any]]
    heal_times: list[float]
    duration: float

    # -- verdicts ---------------------------------------------------------------

    def kills(self) -> list[Fault]:
        return [f for f in self.faults if f.kind in ("kill-host", "kill-provider")]

    def excused(self, call: CallRecord) -> bool:
        """A failed call is excused only if it was in flight when a process was killed."""
        return any(call.started <= f.at <= call.ended + 0.05 for f in self.kills())

    def nearest_fault(self, call: CallRecord) -> str:
        """The fault closest to a call, for reading an unexcused failure."""
        if not self.faults:
            return "no fault"
        f = min(self.faults, key=lambda f: abs(f.at - call.started))
        return f"{f.kind} {f.what} at {f.at - call.started:+.1f} s from its start"

    def unexcused(self) -> list[CallRecord]:
        return [c for c in self.calls if c.outcome != "ok" and not self.excused(c)]

    def accounting_ok(self) -> bool:
        total = sum(self.backend_totals.values())
        return self.acknowledged <= total <= self.acknowledged + self.indeterminate

    def unexpected_stops(self) -> list[dict[str, Any]]:
        return [s for s in self.stops if not s["expected"]]

    def passed(self) -> bool:
        return (
            not self.unexcused()
            and self.accounting_ok()
            and not self.unexpected_stops()
            and all(h < HEAL_GOAL_S for h in self.heal_times)
        )

    # -- output -----------------------------------------------------------------

    def latency_ms(self) -> dict[str, float]:
        lat = sorted((c.ended - c.started) * 1000 for c in self.calls if c.outcome == "ok")
        if not lat:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "p50": lat[len(lat) // 2],
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "max": lat[-1],
        }

    def failures_grouped(self) -> list[tuple[str, int, bool]]:
        """(message, count, excused) for every distinct failure, most frequent first."""
        groups: Counter[tuple[str, bool]] = Counter()
        for c in self.calls:
            if c.outcome != "ok":
                groups[(_shorten(c.message), self.excused(c))] += 1
        return [(m, n, ex) for (m, ex), n in groups.most_common()]

    def rows(self) -> list[tuple[str, str, str, str]]:
        by = Counter(c.outcome for c in self.calls)
        lat = self.latency_ms()
        total = sum(self.backend_totals.values())
        kinds = Counter(f.kind for f in self.faults)
        exact = "exact" if total == self.acknowledged else None
        verdict = exact or ("within bounds" if self.accounting_ok() else "BROKEN")
        rows = [
            ("duration", "", f"{self.duration:.0f} s", f"{self.settings.hosts} hosts"),
            ("callers", "", f"{self.settings.callers}", "concurrent, each waiting its reply"),
            ("calls ok", "", f"{by['ok']}", f"{by['ok'] / max(self.duration, 1):.0f}/s"),
            ("calls failed", "", f"{by['failed']}", f"{len(self.unexcused())} not excused"),
            ("calls timed out", "", f"{by['timeout']}", f"{self.settings.call_timeout:g} s own"),
            (
                "latency p50 / p99 / max",
                "",
                f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.0f} ms",
                "ok calls",
            ),
            ("link swaps", "", f"{self.swaps}", f"every {self.settings.swap_every:g} s"),
            ("faults", "", f"{len(self.faults)}", ", ".join(f"{k} {n}" for k, n in kinds.items())),
            (
                "accounting",
                "",
                verdict,
                f"backends {total} = {' + '.join(str(v) for v in self.backend_totals.values())}; "
                f"acknowledged {self.acknowledged}, indeterminate {self.indeterminate}",
            ),
            (
                "controller stops",
                "",
                f"{len(self.stops)}",
                f"{len(self.unexpected_stops())} not asked for by the manifest",
            ),
            (
                "heal after host kill",
                "",
                ", ".join(f"{h:.1f}" for h in self.heal_times) + " s" if self.heal_times else "-",
                f"goal < {HEAL_GOAL_S:g} s",
            ),
        ]
        return rows

    def print(self) -> None:
        print_table(self.rows(), ("measure", "", "value", "note"))
        groups = self.failures_grouped()
        if groups:
            print("\nfailures, grouped:")
            for msg, n, ex in groups:
                print(f"  {n:6d}  {'(in flight at a kill) ' if ex else 'NOT EXCUSED '}{msg}")
        if self.stops:
            print("\ncontroller stop/delete commands for the app:")
            for s in self.stops:
                flag = "asked for" if s["expected"] else "NOT ASKED FOR"
                print(f"  {flag}: {s['command']} — {s['cause']}")
        for c in self.unexcused()[:20]:
            took = c.ended - c.started
            print(f"  not excused: {c.fn} took {took:.1f} s; nearest {self.nearest_fault(c)}")
        print("\nverdict:", "PASS" if self.passed() else "FAIL")


def _shorten(msg: str) -> str:
    """One failure message with ids that vary per call folded, so like ones group."""
    return msg if len(msg) < 300 else msg[:300] + "…"


def manifest(images: dict[str, str], greeters: int, version: str) -> dict[str, Any]:
    def spread(role: str) -> list[dict[str, Any]]:
        return [{"name": role, "requirements": {"role": role}}]

    def provider(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "capability",
            "properties": {"image": f"builtin://keyvalue-{name}"},
            "traits": [
                {
                    "type": "daemonscaler",
                    "properties": {"instances": 1, "spread": spread("backend")},
                }
            ],
        }

    def component(name: str, instances: int, role: str, *traits: dict[str, Any]) -> dict[str, Any]:
        spreader = {"instances": instances, "spread": spread(role)}
        return {
            "name": name,
            "type": "component",
            "properties": {"image": images[name]},
            "traits": [{"type": "spreadscaler", "properties": spreader}, *traits],
        }

    greet_link = {
        "type": "link",
        "properties": {
            "target": "greeter",
            "namespace": "lattice",
            "package": "examples",
            "interfaces": ["greet"],
        },
    }
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": APP, "annotations": {"version": version}},
        "spec": {
            "components": [
                component("counter", 16, "source"),
                component("caller", 8, "source", greet_link),
                component("greeter", greeters, "backend"),
                *(provider(b) for b in BACKENDS),
            ]
        },
    }


class HostProc:
    """One `lattice up` process with a fixed identity, so a restart is the same host."""

    def __init__(self, index: int, url: str, lattice: str, data_dir: Path, logs: Path) -> None:
        from host.identity import load_identity, new_server_seed

        self.index = index
        self.role = "source" if index == 0 else "backend"
        self.seed = new_server_seed()
        self.host_id = load_identity(self.seed).host_id
        self.url, self.lattice, self.data_dir, self.logs = url, lattice, data_dir, logs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "LATTICE_HOST_SEED": self.seed}  # a secret: not on argv
        log = (self.logs / f"host{self.index}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lattice",
                "up",
                "--nats-url",
                self.url,
                "--lattice",
                self.lattice,
                "--data-dir",
                str(self.data_dir),
                "--label",
                f"role={self.role}",
                "--label",
                f"n={self.index}",
                "--log-level",
                "warning",
                "--no-controller",
                # an inner deadline under the callers' own (5 s): an instance whose import
                # call was lost with a killed process is free again in time for the calls
                # queued behind it (with the 10 s default they would miss their callers'
                # deadline); above what a contended Vault increment may take
                "--timeout-ms",
                "4000",
            ],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Soak:
    def __init__(self, settings: Settings) -> None:
        if settings.hosts < 3:
            raise ValueError("--hosts must be at least 3 (one source host, two backend hosts)")
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="lattice-soak-"))
        # the hosts' data dir holds only the compile cache (identities come from seeds):
        # kept under .cache/ so later runs deserialize instead of compiling
        self.host_dir = ROOT / ".cache" / "soak-host"
        self.lattice = f"soak{uuid.uuid4().hex[:6]}"
        self.calls: list[CallRecord] = []
        self.faults: list[Fault] = []
        self.stop_log: list[dict[str, Any]] = []
        self.heal_times: list[float] = []
        self.swaps = 0
        self.acked = 0
        self.indeterminate = 0
        self.current = BACKENDS[0]
        self._scale_downs: list[tuple[float, int]] = []  # (when, replicas removed)
        self._redis_up = asyncio.Event()
        self._redis_up.set()
        self._stop = asyncio.Event()
        self.key = f"soak-{uuid.uuid4().hex[:8]}"
        self.version = 0
        self.greeters = 4

    # -- set-up -------------------------------------------------------------------

    async def _servers(self) -> None:
        from tests.servers import RedisServer, VaultServer

        self.nats = natsd.EmbeddedNats(
            "127.0.0.1", natsd.free_port(), self.tmp / "js", self.tmp / "nats.log"
        )
        await self.nats.start()
        # an append-only file, fsynced per write: acknowledged writes survive a restart
        self.redis = RedisServer(
            self.tmp / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always")
        )
        await self.redis.start()
        self.vault = VaultServer(self.tmp / "bao")
        await self.vault.start()

    def _images(self) -> dict[str, str]:
        from components.build import build
        from host.runtime.engine import CompileCache, new_engine

        paths = {n: build(n) for n in ("counter", "caller", "greeter")}
        # warm the hosts' shared compile cache once, instead of three hosts compiling
        # the same 18 MB at once (the start-up is not what this harness measures)
        cache = CompileCache(new_engine(), self.host_dir / "cache")
        for p in paths.values():
            cache.load(p.read_bytes())
        return {n: p.as_uri() for n, p in paths.items()}

    async def _deploy(self, client: LatticeClient, images: dict[str, str]) -> None:
        self.version += 1
        body = manifest(images, self.greeters, f"v{self.version}")
        put = await client.model("put", body=json.dumps(body).encode())
        await client.model("deploy", APP, {"version": put["version"]})

    async def _until_deployed(self, client: LatticeClient, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(LatticeError):
                st = (await client.model("status", APP))["status"]
                if st.get("version") == f"v{self.version}" and st.get("state") == "deployed":
                    return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"app {APP} not deployed within {timeout:g}s")

    async def _link(self, client: LatticeClient, backend: str, replace: bool = True) -> None:
        await client.put_link(
            f"{APP}-counter",
            f"{APP}-{backend}",
            *KV,
            KV_IFACES,
            target_config=[f"soakkv-{backend}"],
            replace=replace,
        )

    # -- load -----------------------------------------------------------------------

    async def _caller(self, client: LatticeClient, n: int) -> None:
        use_counter = n % 4 != 3  # three in four drive the counter, the rest the relay
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if use_counter:
                    got = await client.call(
                        f"{APP}-counter",
                        f"{COUNTER_FN}.increment",
                        [f"{self.key}-{n}"],  # a key per caller: no single hot key
                        timeout=self.s.call_timeout,
                    )
                    ok = isinstance(got, dict) and "ok" in got
                    msg = "" if ok else str(got.get("err") if isinstance(got, dict) else got)
                else:
                    got = await client.call(
                        f"{APP}-caller", RELAY_FN, ["soak"], timeout=self.s.call_timeout
                    )
                    ok = got == "Hello, soak!"
                    msg = "" if ok else f"unexpected answer {got!r}"
                outcome = "ok" if ok else "failed"
                if not ok and use_counter and ("timeout" in msg or "did not answer" in msg):
                    outcome = "timeout"  # the provider's or the bridge's deadline: unknown
            except InvocationError as exc:
                outcome, msg = ("timeout" if exc.kind == "timeout" else "failed"), str(exc)
            except LatticeError as exc:
                msg = str(exc)
                outcome = "timeout" if "no reply within" in msg else "failed"
            t1 = time.monotonic()
            self.calls.append(
                CallRecord("increment" if use_counter else "relay", t0, t1, outcome, msg)
            )
            if use_counter:
                if outcome == "ok":
                    self.acked += 1
                elif outcome == "timeout":
                    self.indeterminate += 1
            if outcome != "ok":
                await asyncio.sleep(0.05)  # a failing lattice must not become a busy loop

    # -- faults -----------------------------------------------------------------

    async def _swapper(self, client: LatticeClient) -> None:
        i = 0
        while not self._stop.is_set():
            await self._sleep(self.s.swap_every)
            if self._stop.is_set():
                return
            i += 1
            nxt = BACKENDS[i % len(BACKENDS)]
            if nxt == "redis":  # a Redis restart happens while the link points elsewhere
                await self._redis_up.wait()
            self.current = nxt  # before the put: calls may route there from now on
            await self._link(client, nxt)
            self.swaps += 1

    async def _faulter(self, client: LatticeClient) -> None:
        cycle = ["kill-provider", "scale", "kill-host", "scale", "restart-redis"]
        i = 0
        while not self._stop.is_set():
            await self._sleep(self.s.fault_every)
            if self._stop.is_set():
                return
            kind = cycle[i % len(cycle)]
            i += 1
            await getattr(self, "_" + kind.replace("-", "_"))(client)

    async def _kill_provider(self, client: LatticeClient) -> None:
        host = self.rng.choice(self.hosts[1:])
        backend = self.rng.choice(BACKENDS)
        inv = await client.inventory(host.host_id)
        pid = next((p.get("pid") for p in inv.providers if p["id"] == f"{APP}-{backend}"), None)
        if pid:
            self.faults.append(
                Fault(
                    "kill-provider",
                    time.monotonic(),
                    f"{APP}-{backend}",
                    {"host": host.index, "pid": pid},
                )
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def _kill_host(self, client: LatticeClient) -> None:
        victim = self.rng.choice(self.hosts[1:])
        before = await self._greeters_by_host(client)
        had = before.get(victim.host_id, 0)
        want = self.greeters
        t0 = time.monotonic()
        self.faults.append(Fault("kill-host", t0, f"host{victim.index}", {"greeters": had}))
        victim.kill()
        healed = None
        while time.monotonic() - t0 < 30:
            now = await self._greeters_by_host(client, exclude={victim.host_id})
            if sum(now.values()) >= want:
                healed = time.monotonic() - t0
                break
            await asyncio.sleep(0.1)
        if had:
            self.heal_times.append(healed if healed is not None else float("inf"))
        await self._sleep(1.0)
        victim.start()  # the same identity comes back

    async def _restart_redis(self, client: LatticeClient) -> None:
        # right after the link left Redis, so it is back long before the link returns
        # (two swaps later): the restart must lose nothing acknowledged, and the provider
        # must find its pooled connections dead and reconnect
        after = BACKENDS[(BACKENDS.index("redis") + 1) % len(BACKENDS)]
        while self.current != after and not self._stop.is_set():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # calls already on their way to Redis finish
        self.faults.append(Fault("restart-redis", time.monotonic(), "redis"))
        self._redis_up.clear()
        try:
            await self.redis.stop()
            await self.redis.start()
            await _until_loaded(self.redis.port)  # PING answers while it still loads
        finally:
            self._redis_up.set()

    async def _scale(self, client: LatticeClient) -> None:
        up = self.greeters == 4
        old = self.greeters
        self.greeters = 6 if up else 4
        if not up:
            self._scale_downs.append((time.monotonic(), old - self.greeters))
        self.faults.append(Fault("scale", time.monotonic(), f"greeter {old} -> {self.greeters}"))
        await self._deploy(client, self.images)

    async def _greeters_by_host(
        self,
        client: LatticeClient,
        exclude: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> dict[str, int]:
        out: dict[str, int] = {}
        for h in self.hosts[1:]:
            if h.host_id in exclude:
                continue
            with contextlib.suppress(Exception):
                inv = await client.inventory(h.host_id)
                out[h.host_id] = sum(
                    c.max_instances for c in inv.components if c.id == f"{APP}-greeter"
                )
        return out

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def _on_send(self, cmd: Command) -> None:
        if not stops(cmd):
            return
        text = cmd.describe()
        if APP not in text:
            return
        now = time.monotonic()
        expected = False
        if "greeter" in text:
            for when, n in self._scale_downs:
                used = sum(1 for s in self.stop_log if s.get("scale_down") == when)
                if when <= now <= when + 30 and used < max(n, 1) * self.s.hosts:
                    expected = True
                    self.stop_log.append(
                        {
                            "command": text,
                            "cause": cmd.reason,
                            "at": now,
                            "expected": True,
                            "scale_down": when,
                        }
                    )
                    return
        self.stop_log.append(
            {"command": text, "cause": cmd.reason, "at": now, "expected": expected}
        )

    # -- the run ------------------------------------------------------------------

    async def run(self) -> Report:
        await self._servers()
        self.hosts: list[HostProc] = []
        ctl: Controller | None = None
        client: LatticeClient | None = None
        try:
            self.images = self._images()
            self.hosts = [
                HostProc(i, self.nats.url, self.lattice, self.host_dir, self.tmp)
                for i in range(self.s.hosts)
            ]
            for h in self.hosts:
                h.start()
            client = await LatticeClient.connect(self.nats.url, self.lattice, timeout=30)
            while len(await client.hosts(wait=0.5)) < self.s.hosts:
                await asyncio.sleep(0.2)
            ctl = Controller(self.nats.url, self.lattice)
            await ctl.start()
            ctl.worker.on_send.append(self._on_send)
            await client.put_config("soakkv-redis", {"url": self.redis.url(0)})
            await client.put_config(
                "soakkv-vault",
                {"addr": self.vault.addr, "mount": "secret", "token": self.vault.token},
                ["token"],
            )
            await client.put_config("soakkv-nats", {"bucket": f"soak{self.key[-8:]}"})
            await self._deploy(client, self.images)
            await self._until_deployed(client)
            await self._link(client, "redis", replace=False)
            while "ok" not in (
                await client.call(
                    f"{APP}-counter", f"{COUNTER_FN}.increment", ["warm-up"], timeout=10
                )
            ):
                await asyncio.sleep(0.2)

            t0 = time.monotonic()
            tasks = [asyncio.create_task(self._caller(client, n)) for n in range(self.s.callers)]
            tasks += [
                asyncio.create_task(self._swapper(client)),
                asyncio.create_task(self._faulter(client)),
            ]
            await self._sleep(self.s.minutes * 60)
            self._stop.set()
            await asyncio.gather(*tasks)
            duration = time.monotonic() - t0

            totals = {}
            for backend in BACKENDS:
                await self._link(client, backend)
                totals[backend] = 0
                for n in range(self.s.callers):
                    got = await client.call(
                        f"{APP}-counter", f"{COUNTER_FN}.get", [f"{self.key}-{n}"], timeout=10
                    )
                    totals[backend] += int(got.get("ok") or 0) if isinstance(got, dict) else 0
            return Report(
                settings=self.s,
                calls=self.calls,
                faults=self.faults,
                swaps=self.swaps,
                acknowledged=self.acked,
                indeterminate=self.indeterminate,
                backend_totals=totals,
                stops=self.stop_log,
                heal_times=self.heal_times,
                duration=duration,
            )
        finally:
            if ctl is not None:
                await ctl.stop()
            if client is not None:
                await client.close()
            for h in self.hosts:
                h.stop()
            await self.vault.stop()
            await self.redis.stop()
            await self.nats.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)


async def _until_loaded(port: int, timeout: float = 30.0) -> None:
    """Until Redis serves data commands (it answers PING while loading its files)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"*2\r\n$3\r\nGET\r\n$13\r\nsoak-probe-xx\r\n")
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 1.0)
            finally:
                writer.close()
            if not line.startswith(b"-LOADING"):
                return
        await asyncio.sleep(0.05)


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench soak")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--callers", type=int, default=32)
    ap.add_argument("--swap-every", type=float, default=2.0)
    ap.add_argument("--fault-every", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    settings = Settings(a.minutes, a.hosts, a.callers, a.swap_every, a.fault_every, 5.0, a.seed)
    report = await Soak(settings).run()
    report.print()
    save("soak", report.rows())
    if not report.passed():
        sys.exit(1)
