"""The host process: joins a lattice, answers the control interface, runs components.

Start-up: connect to NATS (starting an embedded nats-server when nothing answers at a
local URL), subscribe to the control subjects, announce `host_started`, then heartbeat
with the full inventory. Stop (SIGINT/SIGTERM or `host.stop`): stop taking control
requests, stop every component after its in-flight calls end, announce `host_stopped`,
close the connection and the embedded server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription

from host import http_serve
from host.components import ComponentManager
from host.config import HostConfig, signing_of
from host.ctl import ControlInterface
from host.events_stream import ensure as ensure_events_stream
from host.identity import HostIdentity, builtin_labels, load_identity
from host.liveness import Beater
from host.metrics import HostMetrics
from host.policy import PolicyGate
from host.provider_sockets import ProviderSockets
from host.providers import InProcessFactory, ProviderManager
from host.runtime import artifact
from host.runtime.engine import CompileCache, EpochTicker, new_engine
from host.runtime.imports import ImportBridge
from host.scoped import ScopedLinks
from host.spy import Spy
from host.workers import WorkerSet, cpu_plan, pin_this_process
from lattice import natsauth, natsd, policy, tracing
from lattice.protocol import events, subjects
from lattice.protocol.links import merge_config
from lattice.protocol.messages import HostInventory, HostPing
from lattice.state import LatticeState
from lattice.version import VERSION
from providers.http_server.provider import HttpServerProvider

log = structlog.get_logger("lattice.host")


class HostStartError(RuntimeError):
    """The host cannot start; the message says why and what to do."""


def human_duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    parts += [f"{h}h"] if h else []
    parts += [f"{m}m"] if m else []
    return " ".join([*parts, f"{s}s"])


class Host:
    def __init__(self, config: HostConfig, identity: HostIdentity | None = None) -> None:
        self.config = config
        self.identity = identity or load_identity(config.host_seed)
        self.lattice = config.lattice
        self.labels: dict[str, str] = {**builtin_labels(), **config.labels}
        self.started_at = time.time()
        self.nc: NATS = NATS()
        self.embedded: natsd.EmbeddedNats | None = None
        self.engine = new_engine()
        self.ticker = EpochTicker(self.engine)
        self.cache = CompileCache(self.engine, config.cache_dir)
        self.ctl = ControlInterface(self)
        self.socket_dir: Path | None = None  # where its provider processes listen for it
        self.components: ComponentManager
        self._subs: list[Subscription] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._beat: Beater | None = None  # liveness beats, in a thread of their own
        self._stopped = asyncio.Event()
        self._stopping = False
        self._stop_task: asyncio.Future[None] | None = None
        self.nats_url = config.nats_url  # the URL actually joined (an embedded server's)
        self.started = asyncio.Event()
        self.before_stop: list[Callable[[], Awaitable[None]]] = []  # e.g. an embedded controller
        self._log = log.bind(host_id=self.host_id, lattice=self.lattice)
        self.metrics = HostMetrics(self)  # its own registry: several hosts in one process
        self.admin: Any = None  # host/admin.py, with --admin-addr
        self.tracing: tracing.Tracing | None = None  # --otlp-endpoint (lattice/tracing.py)
        self.workers: WorkerSet | None = None  # --workers N > 1 (host/workers.py)
        self._cpu_of = cpu_plan(config.pin_cpus)  # --pin-cpus: each process's CPU
        # --account-signing-key: (key, account) to mint provider identities with
        self._signing = signing_of(config)

    @property
    def host_id(self) -> str:
        return self.identity.host_id

    @property
    def friendly_name(self) -> str:
        return self.identity.friendly_name

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        url = await self._ensure_nats()  # an embedded nats-server is not pinned
        if (cpu := self._cpu_of(0)) is not None:
            pin_this_process(cpu)
        try:
            self.nc = await self._connect(url, f"lattice-host {self.friendly_name}")
        except natsauth.NatsConnectError as exc:
            await self._stop_embedded()
            raise HostStartError(str(exc)) from None
        self.state = LatticeState(self.nc, self.lattice)
        try:
            await self.state.start()
        except Exception as exc:
            await self.nc.close()
            await self._stop_embedded()
            raise HostStartError(
                f"cannot open the lattice's key-value buckets on {url}: {exc or type(exc).__name__}"
                " (the NATS server needs JetStream enabled: nats-server -js)"
            ) from None
        await ensure_events_stream(self.nc, self.lattice)  # `lattice events --since`
        self.policy = PolicyGate.for_host(self)  # --policy-subject (host/policy.py)
        if self.config.provider_sockets:  # private (0700); host/provider_sockets.py
            self.socket_dir = Path(tempfile.mkdtemp(prefix="lattice-"))
        await self._start_runtime(url)
        if self.policy.active:  # the service decides on each start, seeing its claims
            self.bridge.admit = self.policy.admit
        self.providers = ProviderManager(
            nc=self.nc,
            lattice=self.lattice,
            host_id=self.host_id,
            nats_url=url,
            state=self.state,
            publish_event=self.publish_event,
            health_interval=self.config.provider_health_interval,
            in_process=self._in_process_providers(),
            nats_auth=self.config.nats_auth,
            signing=self._signing,
        )
        self.providers.otlp_endpoint = self.config.otlp_endpoint
        self.providers.socket_dir = self.socket_dir
        if self.config.workers > 1:
            self._start_workers(url)
        for subject, queue, cb in self.ctl.subscriptions():
            self._subs.append(await self.nc.subscribe(subject, queue=queue or "", cb=cb))
        await self.nc.flush()
        await self.publish_event(
            "host_started", events.host_started(self.host_id, self.friendly_name, self.labels)
        )
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        if self.config.beat_interval > 0:
            self._beat = Beater(
                url, self.lattice, self.host_id, self.config.beat_interval, self.config.nats_auth
            )
            self._beat.start()
        self.nats_url = url
        if self.config.admin_addr:
            await self._start_admin(self.config.admin_addr)
        self.started.set()
        self._log.info(
            "host started",
            friendly_name=self.friendly_name,
            nats_url=url,
            embedded_nats=self.embedded is not None,
            labels=self.labels,
            workers=self.config.workers,
        )

    async def _start_runtime(self, url: str) -> None:
        """What runs components, shared by the host and its worker processes: the
        epoch ticker, artifact fetching, the import bridge, the component manager,
        tracing and the spy tap."""
        self.ticker.start()
        artifact.bind(self)  # component bytes and compiled code through the lattice
        self.bridge = ImportBridge(
            nc=self.nc,
            loop=asyncio.get_running_loop(),
            lattice=self.lattice,
            links=self.state.links,
            link_name=self.link_name,
            component_config=self.component_config,
            fetch_link=self.state.fetch_link,
        )
        self.components = ComponentManager(
            nc=self.nc,
            lattice=self.lattice,
            host_id=self.host_id,
            engine=self.engine,
            cache=self.cache,
            default_limits=self.config.limits,
            publish_event=self.publish_event,
            bridge=self.bridge,
        )
        self.components.metrics = self.bridge.metrics = self.metrics
        if self.socket_dir is not None:
            self.bridge.sockets = ProviderSockets(self.socket_dir)
        self.bridge.local = self.components  # links to components here skip NATS
        self.tracing = tracing.start(
            self.config.otlp_endpoint,
            service="lattice-host",
            instance_id=self.host_id,
            attributes={"lattice.name": self.lattice},
        )
        self.components.tracing = self.bridge.tracing = self.tracing  # None: off
        if self._signing is not None:  # each component's link calls on a login of its own
            self.bridge.scoped = ScopedLinks(
                url=url,
                auth=self.config.nats_auth,
                signing=self._signing,
                lattice=self.lattice,
                host_id=self.host_id,
                links=self.state.links,
            )
            self.bridge.scoped.start()
        self.spy = await Spy.attach(self)  # `lattice spy`: taps only watched components

    def _start_workers(self, url: str) -> None:
        """`--workers N`: N-1 more processes serve this host's components (host/workers.py)."""
        from host.worker import start_data

        self.workers = WorkerSet(
            self.config.workers,
            start_data(self.config, url, self.identity, self.socket_dir),
            self.host_id,
            self.lattice,
            cpu_of=self._cpu_of,
        )
        self.components.workers = self.workers
        self.providers.mirror = self.workers  # the in-host http-server runs in each
        self.workers.start()

    async def _connect(self, url: str, name: str) -> NATS:
        """The host's (or a worker's) own connection: reconnects forever, says so."""
        return await natsauth.connect(
            url,
            self.config.nats_auth,
            name=name,
            connect_timeout=self.config.nats_connect_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            error_cb=self._on_nats_error,
            disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
        )

    async def _ensure_nats(self) -> str:
        url = self.config.nats_url
        try:  # an embedded server stands in only for one local URL, never for a list
            local = natsd.is_local(url) and len(natsauth.server_list(url)) == 1
        except (natsd.NatsServerError, ValueError) as exc:
            raise HostStartError(str(exc)) from None
        if await natsd.answers(url, timeout=self.config.nats_connect_timeout if not local else 1.0):
            return url
        if not local:
            raise HostStartError(
                f"no NATS server answers at {url}; start one there or point --nats-url "
                "at a reachable server (an embedded server is only started for local URLs)"
            )
        if not self.config.embedded_nats:
            raise HostStartError(f"no NATS server answers at {url} and --no-embedded-nats is set")
        host, port = natsd.split_url(url)
        host = "127.0.0.1" if host in ("localhost", "") else host
        nats_dir = self.config.data_dir / "nats"
        self.embedded = natsd.EmbeddedNats(
            host=self.config.embedded_listen or host,
            port=port,
            store_dir=nats_dir / "jetstream",
            log_file=nats_dir / "nats.log",
            config_file=self.config.embedded_config,
        )
        try:
            await self.embedded.start()
        except natsd.NatsServerError as exc:
            self.embedded = None
            raise HostStartError(f"could not start the embedded NATS server: {exc}") from None
        secured = self.config.embedded_config is not None
        self._log.info(
            "no NATS server answered; started an embedded nats-server with JetStream "
            + (
                "(secured: operator mode, every connection logs in; --secure)"
                if secured
                else "(anonymous, on loopback only: for one machine; `lattice up --secure` "
                "or your own server secures a shared lattice, docs/security.md)"
            ),
            url=self.embedded.url,
            store_dir=str(self.embedded.store_dir),
            log_file=str(self.embedded.log_file),
        )
        return f"nats://{host}:{port}" if self.config.embedded_listen else self.embedded.url

    async def run(self) -> None:
        """Start, then serve until a signal or `host.stop` arrives."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._signal_stop, sig)
        await self._stopped.wait()

    def _signal_stop(self, sig: signal.Signals) -> None:
        self._stop_task = asyncio.ensure_future(self.request_stop(f"received {sig.name}"))

    async def request_stop(self, reason: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        await asyncio.sleep(0.05)  # let the control reply that asked for this go out
        try:
            await self.stop(reason)
        finally:
            self._stopped.set()

    async def stop(self, reason: str = "host stopped") -> None:
        self._stopping = True
        self._log.info("host stopping", reason=reason)
        for hook in self.before_stop:
            try:
                await hook()
            except Exception:
                self._log.exception("stop hook failed")
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if hasattr(self, "components"):  # workers drain their calls while ours drain
            stops = [self.components.stop_all()]
            await asyncio.gather(*stops, *([self.workers.stop()] if self.workers else []))
        if hasattr(self, "providers"):
            await self.providers.stop_all()
        if hasattr(self, "bridge") and self.bridge.sockets is not None:
            self.bridge.sockets.close()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        gc.collect()  # drop dead stores now, not in wasmtime's threads at interpreter exit
        if self._beat is not None:  # silent before it says goodbye, never after
            await asyncio.to_thread(self._beat.stop)
        await self.publish_event(
            "host_stopped", events.host_stopped(self.host_id, self.labels, reason)
        )
        if hasattr(self, "bridge") and self.bridge.scoped is not None:
            await self.bridge.scoped.close()
        if hasattr(self, "state"):
            await self.state.stop()
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), 5.0)
        self.ticker.stop()
        if self.tracing is not None:  # the last spans, bounded: a dead collector never holds us
            await self.tracing.close(2.0)
        await self._stop_embedded()
        if self.admin is not None:
            await self.admin.stop()
        self._log.info("host stopped")

    async def _start_admin(self, addr: str) -> None:
        from host.admin import AdminServer, host_checks

        self.admin = AdminServer(addr, self.metrics.registry, host_checks(self), "host")
        try:
            await self.admin.start()
        except OSError as exc:
            self.admin = None
            await self.stop(f"admin endpoints failed: {exc}")
            raise HostStartError(str(exc)) from None

    async def _stop_embedded(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None

    # -- NATS callbacks -------------------------------------------------------

    async def _on_nats_error(self, exc: Exception) -> None:
        self._log.warning("NATS error", error=str(exc) or type(exc).__name__)

    async def _on_disconnect(self) -> None:
        if not self._stopping:
            self._log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnect(self) -> None:
        self.metrics.nats_reconnects += 1
        if hasattr(self, "state"):
            self._resync = asyncio.ensure_future(self.state.resync())
        self._log.info(
            "reconnected to NATS",
            url=str(self.nc.connected_url.netloc if self.nc.connected_url else ""),
        )

    def _in_process_providers(self) -> dict[str, InProcessFactory]:
        """Built-in providers this host runs in its own process: the http-server, whose
        requests for components running here then reach their pools directly."""
        if not self.config.http_in_host:
            return {}

        def http_server(host_data: Any) -> HttpServerProvider:
            provider = HttpServerProvider(host_data)
            provider.local = http_serve.local_server(self.components.pool_of)
            provider.reuse_port = self.config.workers > 1  # its workers listen too
            return provider

        return {"builtin://http-server": http_server}

    def component_config(self, component_id: str) -> dict[str, str]:
        """The component's named config, merged in order, secrets left out, only the
        names its capability policy lets it read (lattice/policy.py)."""
        configs = self.state.configs
        names = self.components.config_names(component_id)
        names, found, refused = policy.readable(configs, component_id, names)
        public, _ = merge_config(names, configs)
        if found is None:
            return public  # no policy: what it always was
        view = policy.ConfigView(public)
        view.policy, view.refused = found, refused
        return view

    def link_name(self, component_id: str, namespace: str, package: str) -> str:
        """The link name a component uses for a package: `link-name.{ns}:{pkg}` in its
        named config, else "default". Read per call, so a config change applies at once."""
        return self.component_config(component_id).get(
            f"link-name.{namespace}:{package}", "default"
        )

    # -- events and state -----------------------------------------------------

    async def publish_event(self, event_type: str, data: dict[str, Any]) -> None:
        body = events.encode(events.cloud_event(self.host_id, event_type, data))
        try:
            await self.nc.publish(subjects.event(self.lattice, event_type), body)
        except Exception as exc:
            self._log.warning("could not publish event", event_type=event_type, error=str(exc))

    async def _heartbeat_loop(self) -> None:
        while True:
            if self.nc.is_closed:  # closed for good (reconnects are unlimited): say so once
                self._log.warning("NATS connection closed; heartbeats stop")
                return
            await self.publish_event(
                "host_heartbeat", events.host_heartbeat(self.inventory().model_dump())
            )
            await asyncio.sleep(self.config.heartbeat_interval)

    async def set_label(self, key: str, value: str | None) -> None:
        if value is None:
            self.labels.pop(key, None)
        else:
            self.labels[key] = value
        await self.publish_event("labels_changed", events.labels_changed(self.host_id, self.labels))

    def uptime(self) -> float:
        return time.time() - self.started_at

    def ping(self) -> HostPing:
        up = self.uptime()
        return HostPing(
            id=self.host_id,
            friendly_name=self.friendly_name,
            labels=self.labels,
            lattice=self.lattice,
            version=VERSION,
            uptime_seconds=int(up),
            uptime_human=human_duration(up),
        )

    def inventory(self) -> HostInventory:
        up = self.uptime()
        return HostInventory(
            host_id=self.host_id,
            friendly_name=self.friendly_name,
            lattice=self.lattice,
            labels=dict(self.labels),
            components=self.components.describe() if hasattr(self, "components") else [],
            providers=self.providers.describe() if hasattr(self, "providers") else [],
            version=VERSION,
            uptime_seconds=int(up),
            uptime_human=human_duration(up),
        )
