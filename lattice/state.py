"""The lattice's shared state as this host sees it: links and named config.

Both live in JetStream key-value buckets (`LATTICEDATA_{lattice}`, `CONFIGDATA_{lattice}`)
so every host sees the same lattice. Each host watches both buckets and keeps an
in-memory copy; calls resolve links from that copy, so a link change reaches every
host's next call without a request per call. A host that starts late, or reconnects
after an outage, replays the buckets and fires change callbacks for whatever differs.

A watcher can stall without an error: when the NATS server that held its (ephemeral,
one-replica) consumer dies, a host that stayed connected to another server gets no
more updates, and nats-py notices nothing. So every `WATCHDOG_S` the host compares each
bucket's last revision with the last one it applied; behind on two checks in a row,
it replays the buckets (`resync`), once per such revision (measured with a NATS node
of three killed: a host's copy stayed stale for over a minute without this).

Writes are revision-checked (create / update with `last=`): two hosts racing to put
links with the same identity cannot overwrite each other silently.

Beside the links, the links bucket holds `claims.<id>`: the signed claims' issuer and
subject of a component a host started while asking a policy service (host/policy.py),
so whichever host answers a later link put can name them. They are read, not watched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from lattice import buckets
from lattice.protocol.links import (
    Identity,
    Link,
    LinkDelRequest,
    LinkPutRequest,
    NamedConfig,
    check_put,
    config_key,
    link_key,
)

log = structlog.get_logger("lattice.state")

CLAIMS_PREFIX = "claims."  # keys in the links bucket beside links, as wasmCloud keeps them

WATCHDOG_S = 5.0

LinkListener = Callable[[Link | None, Link | None], Awaitable[None]]
LinkPrepare = Callable[[Link], Awaitable[None]]
ConfigListener = Callable[[str, NamedConfig | None], Awaitable[None]]


class StateError(ValueError):
    """A link or config change refused; the message says why."""


def links_bucket(lattice: str) -> str:
    return f"LATTICEDATA_{lattice}"


def config_bucket(lattice: str) -> str:
    return f"CONFIGDATA_{lattice}"


class LatticeState:
    def __init__(self, nc: NATS, lattice: str) -> None:
        self.nc = nc
        self.lattice = lattice
        self.links: dict[Identity, Link] = {}
        self.configs: dict[str, NamedConfig] = {}
        self._link_listeners: list[LinkListener] = []
        self._config_listeners: list[ConfigListener] = []
        self._links_kv: KeyValue | None = None
        self._config_kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[str, int] = {}  # bucket -> last revision applied
        self._seen_changed = asyncio.Condition()
        self._watchdog: asyncio.Task[None] | None = None
        self._log = log.bind(lattice=lattice)

    def on_link_change(self, listener: LinkListener) -> None:
        self._link_listeners.append(listener)

    def on_config_change(self, listener: ConfigListener) -> None:
        self._config_listeners.append(listener)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        kv = api.KeyValueConfig
        self._links_kv = await buckets.key_value(self.nc, kv(links_bucket(self.lattice), history=1))
        self._config_kv = await buckets.key_value(
            self.nc, kv(config_bucket(self.lattice), history=1)
        )
        await self.resync()
        self._watchdog = asyncio.create_task(self._watch_the_watchers())

    async def _watch_the_watchers(self) -> None:
        """Resync when a bucket's watcher stays behind the bucket (see the module doc)."""
        behind: dict[str, int] = {}  # bucket -> last revision seen behind once
        resynced: set[tuple[str, int]] = set()
        while True:
            await asyncio.sleep(WATCHDOG_S)
            stale = False
            for kv in (self._links_kv, self._config_kv):
                if kv is None:
                    continue
                try:
                    state = (await kv.status()).stream_info.state
                except Exception:  # NATS down or JetStream electing: the next round tells
                    continue
                last = state.last_seq if state.messages else 0
                name = kv._name
                if not last or last <= self._seen.get(name, 0):
                    behind.pop(name, None)
                    continue
                if behind.get(name) is not None and (name, last) not in resynced:
                    resynced.add((name, last))
                    stale = True
                behind[name] = last
            if stale:
                self._log.warning("a bucket watcher fell behind; replaying the buckets")
                with contextlib.suppress(Exception):
                    await self.resync()

    async def resync(self) -> None:
        """Replay both buckets, apply the differences, and (re)start the watchers."""
        await self._cancel_watchers()
        ready = [asyncio.Event(), asyncio.Event()]
        assert self._links_kv is not None and self._config_kv is not None
        fresh_links: dict[Identity, Link] = {}
        fresh_configs: dict[str, NamedConfig] = {}
        self._tasks = [
            asyncio.create_task(
                self._watch(self._links_kv, self._apply_link, ready[0], fresh_links)
            ),
            asyncio.create_task(
                self._watch(self._config_kv, self._apply_config, ready[1], fresh_configs)
            ),
        ]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 30)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self._cancel_watchers()

    async def _cancel_watchers(self) -> None:
        """Stop the watchers; bounded, since a watcher's unsubscribe on a dying
        connection must not hold up a shutdown."""
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks.clear()

    async def _watch(
        self,
        kv: KeyValue,
        apply: Callable[[str, bytes | None, dict[Any, Any] | None], Awaitable[None]],
        ready: asyncio.Event,
        initial: dict[Any, Any],
    ) -> None:
        """Apply every entry; the initial replay builds `initial`, then diffs it in one go."""
        watcher = await kv.watchall()
        replaying = True
        try:
            async for entry in watcher:
                if entry is None:  # end of the initial replay
                    if replaying:
                        replaying = False
                        await apply("", None, initial)
                        ready.set()
                    continue
                value = None if entry.operation in ("DEL", "PURGE") else entry.value
                await apply(entry.key, value, initial if replaying else None)
                await self._mark_seen(kv, entry.revision)
            if replaying:
                await apply("", None, initial)
                ready.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _mark_seen(self, kv: KeyValue, revision: int) -> None:
        async with self._seen_changed:
            self._seen[kv._name] = max(self._seen.get(kv._name, 0), revision)
            self._seen_changed.notify_all()

    async def wait_applied(self, kv: KeyValue, revision: int, timeout: float = 5.0) -> None:
        """Wait until this host's watcher has applied `revision` of `kv`."""
        await self._wait_until(lambda: self._seen.get(kv._name, 0) >= revision, timeout)

    async def _settle(self, kv: KeyValue, revision: int, what: str, name: str) -> None:
        """Wait until this host's own copy holds a write it just made, so its next call
        uses it. The write is stored either way: a watcher that is behind (reconnecting,
        stopped) must not turn a stored change into a reported failure."""
        try:
            await self.wait_applied(kv, revision, timeout=2.0)
        except TimeoutError:
            self._log.warning(
                "stored, but this host's watcher has not applied it yet", what=what, name=name
            )

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait, woken by each applied change, until `predicate` holds (TimeoutError if not)."""
        async with self._seen_changed:
            await asyncio.wait_for(self._seen_changed.wait_for(predicate), timeout)

    # -- applying changes -----------------------------------------------------

    async def _apply_link(
        self, key: str, value: bytes | None, initial: dict[Any, Any] | None
    ) -> None:
        if key.startswith(CLAIMS_PREFIX):
            return  # a component's claims (put_claims), read when asked for, not watched
        if initial is not None and key == "":  # replay finished: diff against what we had
            old = dict(self.links)
            self.links.clear()
            self.links.update(initial)
            for ident in set(old) | set(initial):
                if old.get(ident) != initial.get(ident):
                    await self._emit_link(old.get(ident), initial.get(ident))
            return
        try:
            link = Link.model_validate_json(value) if value else None
        except ValueError as exc:
            self._log.warning("ignoring malformed link entry", key=key, error=str(exc))
            return
        if initial is not None:
            if link is not None:
                initial[link.identity] = link
            return
        if link is None:
            gone = next((lk for lk in self.links.values() if lk.key == key), None)
            if gone is not None:
                del self.links[gone.identity]
                await self._emit_link(gone, None)
            return
        before = self.links.get(link.identity)
        self.links[link.identity] = link
        if before != link:
            await self._emit_link(before, link)

    async def _apply_config(
        self, key: str, value: bytes | None, initial: dict[Any, Any] | None
    ) -> None:
        if initial is not None and key == "":
            old = dict(self.configs)
            self.configs.clear()
            self.configs.update(initial)
            for name in set(old) | set(initial):
                if old.get(name) != initial.get(name):
                    await self._emit_config(name, initial.get(name))
            return
        try:
            cfg = NamedConfig.model_validate_json(value) if value else None
        except ValueError as exc:
            self._log.warning("ignoring malformed config entry", key=key, error=str(exc))
            return
        if initial is not None:
            if cfg is not None:
                initial[key] = cfg
            return
        before = self.configs.get(key)
        if cfg is None:
            self.configs.pop(key, None)
        else:
            self.configs[key] = cfg
        if before != cfg:
            await self._emit_config(key, cfg)

    async def _emit_link(self, old: Link | None, new: Link | None) -> None:
        for listener in self._link_listeners:
            try:
                await listener(old, new)
            except Exception:
                self._log.exception("link listener failed")

    async def _emit_config(self, name: str, cfg: NamedConfig | None) -> None:
        for listener in self._config_listeners:
            try:
                await listener(name, cfg)
            except Exception:
                self._log.exception("config listener failed")

    # -- writes ---------------------------------------------------------------

    async def put_link(self, req: LinkPutRequest, prepare: LinkPrepare | None = None) -> Link:
        """Store a link; `prepare` runs after the checks and before the write, so the new
        target can hold the link before any source routes to it (docs/protocol.md)."""
        kv = self._links_kv
        assert kv is not None
        link = Link.model_validate(req.model_dump(exclude={"replace"}))
        body = link.model_dump_json().encode()
        for _ in range(5):
            try:
                entry = await kv.get(link.key)
                existing = Link.model_validate_json(entry.value) if entry.value else None
                revision: int | None = entry.revision
            except KeyNotFoundError:
                existing, revision = None, None
            missing = [c for c in (*req.source_config, *req.target_config) if c not in self.configs]
            configs = (
                {**self.configs, **await self.fetch_configs(missing)} if missing else self.configs
            )  # a config made a moment ago may not have reached our copy yet
            refusal = check_put(req, existing, configs)
            if refusal is not None:
                raise StateError(refusal)
            if prepare is not None:
                await prepare(link)
                prepare = None  # once, even if the write must be tried again
            try:
                if revision is None:
                    new_rev = await kv.create(link.key, body)
                else:
                    new_rev = await kv.update(link.key, body, last=revision)
            except KeyWrongLastSequenceError:
                continue  # someone else wrote it meanwhile: look again
            await self._settle(kv, new_rev, "link", link.describe())
            return link
        raise StateError(f"link {link.describe()} kept changing under us; try again")

    async def del_link(self, req: LinkDelRequest) -> Link | None:
        kv = self._links_kv
        assert kv is not None
        try:
            entry = await kv.get(req.key)
        except KeyNotFoundError:
            return None
        existing = Link.model_validate_json(entry.value) if entry.value else None
        await kv.delete(req.key)
        ident = (req.source_id, req.wit_namespace, req.wit_package, req.name)
        with contextlib.suppress(TimeoutError):
            await self._wait_until(lambda: ident not in self.links)
        return existing

    async def put_config(self, name: str, config: NamedConfig) -> None:
        kv = self._config_kv
        assert kv is not None
        rev = await kv.put(config_key(name), config.model_dump_json().encode())
        await self._settle(kv, rev, "config", name)

    async def del_config(self, name: str) -> bool:
        kv = self._config_kv
        assert kv is not None
        key = config_key(name)
        users = [
            lk.describe()
            for lk in self.links.values()
            if name in (*lk.source_config, *lk.target_config)
        ]
        if users:
            raise StateError(f"config {name!r} is used by links: {'; '.join(users)}")
        try:
            await kv.get(key)
        except KeyNotFoundError:
            return False
        await kv.delete(key)
        with contextlib.suppress(TimeoutError):
            await self._wait_until(lambda: name not in self.configs)
        return True

    # -- fresh reads (the bucket itself, not the watched copy) ---------------------

    async def fetch_link(self, ident: Identity) -> Link | None:
        """The link as the bucket holds it now. The watched copy may lag behind (a host
        reconnecting, a change a moment ago); a caller that must not guess reads this."""
        kv = self._links_kv
        assert kv is not None
        try:
            entry = await kv.get(link_key(*ident))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return Link.model_validate_json(entry.value)
        except ValueError:
            return None

    async def fetch_configs(self, names: list[str]) -> dict[str, NamedConfig]:
        """Named configs as the bucket holds them now (missing ones left out)."""
        kv = self._config_kv
        assert kv is not None
        out: dict[str, NamedConfig] = {}
        for name in names:
            try:
                entry = await kv.get(config_key(name))
            except (KeyNotFoundError, ValueError):
                continue
            if entry.value:
                with contextlib.suppress(ValueError):
                    out[name] = NamedConfig.model_validate_json(entry.value)
        return out

    # -- components' claims: who signed what a host started (for the policy service) ------

    async def put_claims(self, component_id: str, claims: dict[str, Any]) -> None:
        kv = self._links_kv
        assert kv is not None
        await kv.put(_claims_key(component_id), json.dumps(claims).encode())

    async def fetch_claims(self, component_id: str) -> dict[str, Any] | None:
        kv = self._links_kv
        assert kv is not None
        try:
            entry = await kv.get(_claims_key(component_id))
        except KeyNotFoundError:
            return None
        try:
            found = json.loads(entry.value or b"")
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def config(self, name: str) -> NamedConfig | None:
        return self.configs.get(name)

    def links_json(self) -> list[dict[str, Any]]:
        return [json.loads(lk.model_dump_json()) for lk in self.links.values()]


def _claims_key(component_id: str) -> str:
    raw = base64.urlsafe_b64encode(component_id.encode()).decode().rstrip("=")
    return CLAIMS_PREFIX + raw
