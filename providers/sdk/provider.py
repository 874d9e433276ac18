"""The `Provider` base class: hooks, served operations and the link table.

A provider subclasses `Provider`, overrides the hooks it needs (each defaults to a
no-op) and registers the operations it serves, either with the `@operation(...)`
decorator on methods or with `self.serve(name, handler)`. A handler is
`async def handler(link, args) -> wire_value`; it raises `InvocationError` for a typed
failure. The runner (`providers.sdk.runner`) owns NATS; this class owns what the provider
knows: its host data, its current config and its links, keyed by
`(source_id, name, wit_namespace, wit_package)`.

A host sends a provider every link it is a party to. Links where the provider is the
*target* (a component calls it) go to `on_link_put` / `on_link_del` and are found by
`find_link` for calls. Links where the provider is the *source* (it calls a component,
e.g. a messaging provider delivering messages to a `handler` export) are kept apart, in
`source_links`, and go to `on_source_link_put` / `on_source_link_del`; they are never
used to serve calls. By default a source link is accepted and nothing else happens.

What it never does: touch NATS subjects, decode messages or catch handler exceptions
(that is `providers.sdk.dispatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client as NATS

from providers.sdk.hostdata import HostData, Link, LinkKey

Handler = Callable[[Link, list[Any]], Awaitable[Any]]
"""`async def handler(link, args) -> wire value` (anything `lattice.codec.pack` takes)."""

Resolver = Callable[[LinkKey], Awaitable[Link | None]]
"""`async def resolver(key) -> Link | None`: the link as the lattice holds it now."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_MARK = "__lattice_operation__"


@dataclass(frozen=True, slots=True)
class Operation:
    """One served operation: its wire name, handler and (optional) parameter names."""

    name: str
    handler: Handler
    params: tuple[str, ...] | None = None


class LinkError(RuntimeError):
    """A link the provider refused or failed to set up; the message says why."""


def operation(name: str, *, params: Sequence[str] | None = None) -> Callable[[F], F]:
    """Mark `async def method(self, link, args)` as serving operation `name`.

    `name` is the part of the subject after `rpc.`, e.g.
    `wasi:keyvalue/store.bucket.get`. With `params`, calls must pass exactly that many
    arguments (or a map by those names) or they get a `bad-argument` reply.
    """

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (name, tuple(params) if params is not None else None))
        return fn

    return mark


def split_operation(op: str) -> tuple[str, str] | None:
    """`wasi:keyvalue/store.bucket.get` -> ("wasi", "keyvalue"); None at world level."""
    head, sep, _ = op.partition("/")
    if not sep or ":" not in head:
        return None
    namespace, _, package = head.partition(":")
    return namespace, package


class Provider:
    """Base class for a capability provider. Every hook is an async no-op by default."""

    call_timeout: float = 30.0
    """Seconds a handler may run before the caller gets a `timeout` error."""
    health_timeout: float = 5.0
    """Seconds `health()` may take before the provider reports itself unhealthy."""
    shutdown_timeout: float = 10.0
    """Seconds to wait for in-flight calls, then for `on_shutdown`, when stopping."""
    link_drain_seconds: float = 5.0
    """Seconds a deleted or replaced link keeps serving calls routed to it (hand-off)."""

    def __init__(self, host_data: HostData) -> None:
        self.host_data = host_data
        self.config: dict[str, str] = dict(host_data.config)
        self.log = structlog.get_logger("lattice.provider").bind(
            provider_id=host_data.provider_id, lattice=host_data.lattice
        )
        self._links: dict[LinkKey, Link] = {}
        self._source_links: dict[LinkKey, Link] = {}
        self._failed: dict[LinkKey, str] = {}
        self._ops: dict[str, Operation] = {}
        self._nc: NATS | None = None
        if host_data.link_drain_seconds is not None:
            self.link_drain_seconds = host_data.link_drain_seconds
        self._inflight: dict[LinkKey, int] = {}
        self._idle: dict[LinkKey, asyncio.Event] = {}
        self._gates: dict[LinkKey, asyncio.Event] = {}
        self._draining: dict[LinkKey, asyncio.Task[None]] = {}
        self._link_locks: dict[LinkKey, asyncio.Lock] = {}
        self._resolving: dict[LinkKey, asyncio.Future[None]] = {}
        self._changes: dict[LinkKey, int] = {}  # link puts/deletes seen, per key
        self.resolver: Resolver | None = None
        """Asks the host for a link by key (set by the runner); None: nobody to ask."""
        for attr in dir(type(self)):
            mark = getattr(getattr(type(self), attr, None), _MARK, None)
            if mark is not None:
                self.serve(mark[0], getattr(self, attr), params=mark[1])

    # ------------------------------------------------------------------ identity

    @property
    def provider_id(self) -> str:
        return self.host_data.provider_id

    @property
    def lattice(self) -> str:
        return self.host_data.lattice

    @property
    def host_id(self) -> str:
        return self.host_data.host_id

    @property
    def nats(self) -> NATS:
        """The lattice NATS connection (set by the runner before `on_start`)."""
        if self._nc is None:
            raise RuntimeError("the provider is not connected to NATS yet")
        return self._nc

    # ------------------------------------------------------------------ operations

    def serve(self, name: str, handler: Handler, *, params: Sequence[str] | None = None) -> None:
        """Serve operation `name` with `handler(link, args)`; replaces an earlier one."""
        if not name or any(c.isspace() for c in name) or "*" in name or ">" in name:
            raise ValueError(f"operation name {name!r} cannot be part of a NATS subject")
        self._ops[name] = Operation(name, handler, tuple(params) if params is not None else None)

    @property
    def operations(self) -> Mapping[str, Operation]:
        return MappingProxyType(self._ops)

    # ------------------------------------------------------------------ links

    @property
    def links(self) -> Mapping[LinkKey, Link]:
        """The links currently in force (read-only view)."""
        return MappingProxyType(self._links)

    @property
    def source_links(self) -> Mapping[LinkKey, Link]:
        """The links in force where this provider is the source (read-only view)."""
        return MappingProxyType(self._source_links)

    def find_link(self, source_id: str, name: str, op: str) -> Link | None:
        """The link a call from `source_id` over link `name` to operation `op` uses."""
        wit = split_operation(op)
        if wit is not None:
            return self._links.get(LinkKey(source_id, name, *wit))
        matches = [
            lk for k, lk in self._links.items() if k.source_id == source_id and k.name == name
        ]
        return matches[0] if len(matches) == 1 else None

    def link_failure(self, source_id: str, name: str) -> str | None:
        """Why a link from `source_id` named `name` could not be set up, if it failed."""
        for key, reason in self._failed.items():
            if key.source_id == source_id and key.name == name:
                return reason
        return None

    # The hand-off (docs/protocol.md): a link being replaced or deleted keeps serving the
    # calls routed to it. A changed link waits for the calls in flight over the old one
    # (new calls queue behind the change), then runs on_link_del(old) and
    # on_link_put(new), so a backend client is never closed under a call. A deleted link
    # stays in force for `link_drain_seconds`, then takes no new call, and is released
    # once its last call has finished.

    def calling(self, link: Link) -> _CallSlot:
        """`async with provider.calling(link) as current:` holds `link`'s key while a call
        runs over it; `current` is the link in force once any change under way is done
        (None if it went away meanwhile)."""
        return _CallSlot(self, link.key)

    def _enter_call(self, key: LinkKey) -> None:
        self._inflight[key] = self._inflight.get(key, 0) + 1

    def _leave_call(self, key: LinkKey) -> None:
        left = self._inflight[key] - 1
        if left:
            self._inflight[key] = left
            return
        del self._inflight[key]
        idle = self._idle.pop(key, None)
        if idle is not None:
            idle.set()

    async def _until_idle(self, key: LinkKey) -> None:
        """Wait (bounded by the call timeout) until no call runs over `key`."""
        if not self._inflight.get(key):
            return
        idle = self._idle.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), self.call_timeout)

    def _key_lock(self, key: LinkKey) -> asyncio.Lock:
        return self._link_locks.setdefault(key, asyncio.Lock())

    async def add_link(self, link: Link) -> None:
        """Put a link in force (called by the runner): runs `on_link_put`.

        A link with the same key and the same content is a no-op (and ends a drain under
        way); a changed one is swapped as the hand-off above says. Raises `LinkError`
        when refused. A link whose source is this provider (and whose target is not) goes
        to `on_source_link_put` instead.
        """
        if link.target != self.provider_id:
            if link.source_id == self.provider_id:
                await self._add_source_link(link)
                return
            raise LinkError(
                f"link {link.source_id}/{link.name} targets {link.target!r}, "
                f"not this provider ({self.provider_id!r})"
            )
        key = link.key
        self._changed(key)
        async with self._key_lock(key):
            drain = self._draining.pop(key, None)
            if drain is not None:
                drain.cancel()
            old = self._links.get(key)
            if old == link:
                return
            gate = asyncio.Event()
            self._gates[key] = gate
            try:
                if old is not None:
                    await self._until_idle(key)
                    del self._links[key]
                    await self._released(old)
                await self._put(link)
            finally:
                del self._gates[key]
                gate.set()

    async def _put(self, link: Link) -> None:
        try:
            await self.on_link_put(link)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            self._failed[link.key] = reason
            self.log.warning("link refused", **link.describe(), error=reason)
            raise LinkError(f"link {link.source_id}/{link.name}: {reason}") from None
        self._failed.pop(link.key, None)
        self._links[link.key] = link
        self.log.info("link put", **link.describe())

    async def _released(self, link: Link) -> None:
        try:
            await self.on_link_del(link)
        except Exception as exc:
            self.log.warning("on_link_del failed", **link.describe(), error=str(exc))

    async def remove_link(self, key: LinkKey) -> Link | None:
        """Take a link out of force (called by the runner): it drains first, then
        `on_link_del` runs. Returns the link, or None when there was none (not an error).
        """
        self._failed.pop(key, None)
        self._changed(key)
        link = self._links.get(key)
        if link is None:
            return await self._remove_source_link(key)
        if key not in self._draining:
            self._draining[key] = asyncio.create_task(self._drain(key, link))
            self.log.info("link draining", **link.describe(), seconds=self.link_drain_seconds)
        return link

    async def _drain(self, key: LinkKey, link: Link) -> None:
        me = asyncio.current_task()
        try:
            await asyncio.sleep(self.link_drain_seconds)
            async with self._key_lock(key):
                if self._draining.get(key) is not me or self._links.get(key) != link:
                    return  # put back in force meanwhile
                del self._links[key]  # new calls now find no link: `not-linked`
                await self._until_idle(key)
                await self._released(link)
                self.log.info("link deleted", **link.describe())
        finally:
            if self._draining.get(key) is me:
                del self._draining[key]

    async def drained(self) -> None:
        """Wait until every link being drained has been released (tests, shutdown)."""
        while self._draining:
            await asyncio.gather(*list(self._draining.values()), return_exceptions=True)

    def stop_draining(self) -> None:
        """Stopping: links being drained are left for `on_shutdown` to close."""
        for task in self._draining.values():
            task.cancel()
        self._draining.clear()

    async def resolve_missing(self, source_id: str, name: str, op: str) -> Link | None:
        """A call came over a link this provider does not hold: ask the host (which reads
        the lattice's bucket) and put the link in force if it names us. Concurrent calls
        over the same missing link share one question."""
        wit = split_operation(op)
        if wit is None or self.resolver is None:
            return None
        key = LinkKey(source_id, name, *wit)
        while (gate := self._gates.get(key)) is not None:  # a change is being applied
            await gate.wait()
        if (link := self._links.get(key)) is not None:
            return link
        pending = self._resolving.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._resolve(key))
            self._resolving[key] = pending
            pending.add_done_callback(lambda _f: self._resolving.pop(key, None))
        await asyncio.shield(pending)
        return self.find_link(source_id, name, op)

    def _changed(self, key: LinkKey) -> None:
        self._changes[key] = self._changes.get(key, 0) + 1

    async def _resolve(self, key: LinkKey) -> None:
        """Put in force what the bucket holds, unless the host told us about this link
        meanwhile: the hand-off's prepare reaches us *before* the bucket changes, so an
        answer read from the bucket may be older than the link we were just given."""
        assert self.resolver is not None
        seen = self._changes.get(key, 0)
        try:
            link = await self.resolver(key)
        except Exception as exc:
            self.log.warning("could not resolve link", source_id=key.source_id, error=str(exc))
            return
        if self._changes.get(key, 0) != seen:
            return  # superseded by a put or delete that arrived while we asked
        if link is not None and link.target == self.provider_id:
            with contextlib.suppress(LinkError):  # logged; the call says why
                await self.add_link(link)

    async def _add_source_link(self, link: Link) -> None:
        old = self._source_links.get(link.key)
        if old == link:
            return
        if old is not None:
            await self._remove_source_link(link.key)
        try:
            await self.on_source_link_put(link)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            self.log.warning("source link refused", **_source_describe(link), error=reason)
            raise LinkError(
                f"link {link.source_id}/{link.name} to {link.target}: {reason}"
            ) from None
        self._source_links[link.key] = link
        self.log.info("source link put", **_source_describe(link))

    async def _remove_source_link(self, key: LinkKey) -> Link | None:
        link = self._source_links.pop(key, None)
        if link is None:
            return None
        try:
            await self.on_source_link_del(link)
        except Exception as exc:
            self.log.warning("on_source_link_del failed", **_source_describe(link), error=str(exc))
        self.log.info("source link deleted", **_source_describe(link))
        return link

    # ------------------------------------------------------------------ hooks

    async def on_start(self) -> None:
        """Connected to NATS, before the initial links are put and calls are served."""

    async def on_link_put(self, link: Link) -> None:
        """A link to this provider is now in force (initial ones included).

        Raise to refuse it: calls over it then get an `unavailable` error with the reason.
        """

    async def on_link_del(self, link: Link) -> None:
        """A link was removed; release what was set up for it."""

    async def on_source_link_put(self, link: Link) -> None:
        """A link from this provider to a component (`link.target`) is now in force.

        Its settings are in `link.source_config` (`target_secrets` is always empty: a
        host sends secrets only to a link's target). Raise to refuse it.
        """

    async def on_source_link_del(self, link: Link) -> None:
        """A link from this provider was removed; stop calling its target."""

    async def health(self) -> tuple[bool, str]:
        """`(healthy, message)` for the host's health check. Never include secrets."""
        return True, "ok"

    async def on_config_update(self, config: dict[str, str]) -> None:
        """The provider's config changed (`self.config` already holds the new one)."""

    async def on_shutdown(self) -> None:
        """Stopping: in-flight calls have finished; close backends here."""


class _CallSlot:
    """One call's hold on a link key. A class, not `contextlib.asynccontextmanager`:
    contextlib sets `__traceback__` on exceptions passing through, which frozen slotted
    exceptions such as `InvocationError` refuse."""

    __slots__ = ("_held", "_key", "_provider")

    def __init__(self, provider: Provider, key: LinkKey) -> None:
        self._provider, self._key, self._held = provider, key, False

    async def __aenter__(self) -> Link | None:
        p = self._provider
        while (gate := p._gates.get(self._key)) is not None:
            await gate.wait()
        current = p._links.get(self._key)
        if current is not None:
            p._enter_call(self._key)
            self._held = True
        return current

    async def __aexit__(self, *_exc: object) -> None:
        if self._held:
            self._provider._leave_call(self._key)


def _source_describe(link: Link) -> dict[str, Any]:
    """Loggable fields of a source link: identity and config *names* only."""
    return {
        "target": link.target,
        "link_name": link.name,
        "wit": f"{link.wit_namespace}:{link.wit_package}/{','.join(link.interfaces)}",
        "source_config_keys": sorted(link.source_config),
    }
