"""`KeyValueProvider`: wasi:keyvalue@0.2.0-draft on the wire, for any `Store`.

It serves the ten operations of docs/protocol.md ("wasi:keyvalue@0.2.0-draft on the
wire"), validates every argument with `providers.keyvalue.semantics`, and answers each
call with a `result`: `{"ok": value}` or `{"err": error}`. A backend subclass only opens
a `Store` per link (`open_store`) and closes it (`close_store`); validation, paging,
counters, batch alignment, timeouts and health are here, once, so the three built-in
backends cannot drift apart.

Per-link settings are read with `setting(link, name)`: the link's target config, then
the provider's config. Every store call is bounded by `op_timeout`, so a hung backend
never hangs a caller: a read gets an `"… unavailable: no answer within …"` error, a
write (which may have been applied) an invocation error of kind `timeout` (`_result`).
Wrong argument *types* are `bad-argument` invocation errors; wrong *values* (empty key,
oversized value, bad bucket name) are keyvalue errors, as the WIT says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from providers.keyvalue import semantics as kv
from providers.keyvalue.semantics import Indeterminate, KvError, Unavailable
from providers.keyvalue.store import Store
from providers.sdk import (
    HostData,
    Link,
    LinkKey,
    Provider,
    operation,
)
from providers.sdk.backend import BackendGuard, Errors

T = TypeVar("T")

STORE = "wasi:keyvalue/store"
ATOMICS = "wasi:keyvalue/atomics"
BATCH = "wasi:keyvalue/batch"


@dataclass(slots=True)
class _Linked:
    store: Store
    page_size: int


ERRORS = Errors(KvError, Unavailable, Indeterminate, Indeterminate)


class KeyValueProvider(Provider):
    """Base for wasi:keyvalue providers; subclasses implement `open_store`."""

    backend: ClassVar[str] = "keyvalue"
    op_timeout: float = 5.0
    """Seconds one backend operation may take before the call reports it unavailable."""

    def __init__(self, host_data: HostData) -> None:
        super().__init__(host_data)
        self._linked: dict[LinkKey, _Linked] = {}
        self._guard = BackendGuard(self.backend, ERRORS, self.log)

    # ------------------------------------------------------------------ backend hooks

    async def open_store(self, link: Link) -> Store:
        """Open the store for `link` (lazily: the backend may be down right now).

        Raise ValueError with a message naming the setting to refuse a misconfigured link.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement open_store")

    async def close_store(self, link: Link, store: Store) -> None:
        await store.close()

    def setting(self, link: Link, name: str, default: str | None = None) -> str | None:
        """A per-link setting: the link's target config, else the provider's config."""
        value = link.target_config.get(name)
        if value is None or value == "":
            value = self.config.get(name)
        return default if value is None or value == "" else value

    # ------------------------------------------------------------------ provider hooks

    async def on_link_put(self, link: Link) -> None:
        size = kv.page_size(self.setting(link, "page_size"))
        store = await self.open_store(link)
        self._linked[link.key] = _Linked(store, size)
        self.log.info("store opened", source_id=link.source_id, store=store.where)

    async def on_link_del(self, link: Link) -> None:
        linked = self._linked.pop(link.key, None)
        if linked is not None:
            await self.close_store(link, linked.store)

    async def on_shutdown(self) -> None:
        for key in list(self._linked):
            link = self.links.get(key)
            linked = self._linked.pop(key)
            if link is not None:
                await self.close_store(link, linked.store)
            else:
                await linked.store.close()

    async def health(self) -> tuple[bool, str]:
        """Ping every link's store; unhealthy if any fails, naming store and links."""
        if not self._linked:
            return True, f"{self.backend}: no links"

        async def probe(key: LinkKey, store: Store) -> tuple[LinkKey, str | None]:
            try:
                await asyncio.wait_for(store.ping(), self.op_timeout)
            except KvError as exc:
                return key, f"{store.where}: {exc}"
            except TimeoutError:
                return key, f"{store.where}: {self.backend} unavailable: no answer"
            return key, None

        results = await asyncio.gather(*(probe(k, s.store) for k, s in self._linked.items()))
        problems: dict[str, list[str]] = {}
        for key, problem in results:
            if problem is not None:
                problems.setdefault(problem, []).append(f"{key.source_id}/{key.name}")
        if problems:
            return False, "; ".join(f"{p} (links {', '.join(ls)})" for p, ls in problems.items())
        stores = len({s.store.where for s in self._linked.values()})
        return True, f"{self.backend}: {stores} store(s) ok for {len(self._linked)} link(s)"

    # ------------------------------------------------------------------ plumbing

    async def _result(
        self, link: Link, fn: Callable[[_Linked], Awaitable[T]], *, read_only: bool = False
    ) -> dict[str, Any]:
        """Run `fn` against the link's store; wrap the outcome as a wasi `result`.

        Accounting rule: an `err` result promises that nothing was applied. A write whose
        outcome is unknown (no answer within `op_timeout`, or the connection lost after
        the command went out) may have been applied, so it is not an `err` but an
        invocation error of kind `timeout`, as if the caller's own deadline had passed.
        A read (`read_only`) changes nothing, so its lost answer stays an `err`.
        Nothing here retries: a store retries only where it knows it is safe.
        """
        linked = self._linked.get(link.key)
        if linked is None:  # the SDK only routes calls over links that are in force
            return {"err": {"other": f"no store for link {link.source_id}/{link.name}"}}
        where = linked.store.where

        def denied(exc: Exception) -> None:
            if isinstance(exc, KvError) and exc.wire == {"access-denied": None}:
                self.log.warning("backend denied access", store=where, source_id=link.source_id)

        return await self._guard.result(
            where, lambda: fn(linked), self.op_timeout, read_only=read_only, on_error=denied
        )

    # ------------------------------------------------------------------ store

    @operation(f"{STORE}.open", params=("identifier",))
    async def op_open(self, link: Link, args: list[Any]) -> dict[str, Any]:
        try:
            kv.check_bucket(args[0], "open")
        except KvError as exc:
            return {"err": exc.wire}
        return {"ok": None}

    @operation(f"{STORE}.bucket.get", params=("bucket", "key"))
    async def op_get(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> bytes | None:
            b, k = kv.check_bucket(args[0], "get"), kv.check_key(args[1], "get")
            return await s.store.get(b, k)

        return await self._result(link, run, read_only=True)

    @operation(f"{STORE}.bucket.set", params=("bucket", "key", "value"))
    async def op_set(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            b, k = kv.check_bucket(args[0], "set"), kv.check_key(args[1], "set")
            await s.store.set(b, k, kv.check_value(args[2], "set"))

        return await self._result(link, run)

    @operation(f"{STORE}.bucket.delete", params=("bucket", "key"))
    async def op_delete(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            b, k = kv.check_bucket(args[0], "delete"), kv.check_key(args[1], "delete")
            await s.store.delete(b, k)

        return await self._result(link, run)

    @operation(f"{STORE}.bucket.exists", params=("bucket", "key"))
    async def op_exists(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> bool:
            b, k = kv.check_bucket(args[0], "exists"), kv.check_key(args[1], "exists")
            return await s.store.exists(b, k)

        return await self._result(link, run, read_only=True)

    @operation(f"{STORE}.bucket.list-keys", params=("bucket", "cursor"))
    async def op_list_keys(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> dict[str, Any]:
            b = kv.check_bucket(args[0], "list-keys")
            cursor = kv.check_cursor(args[1], "list-keys")
            return kv.page(await s.store.keys(b), cursor, s.page_size)

        return await self._result(link, run, read_only=True)

    # ------------------------------------------------------------------ atomics

    @operation(f"{ATOMICS}.increment", params=("bucket", "key", "delta"))
    async def op_increment(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> int:
            b, k = kv.check_bucket(args[0], "increment"), kv.check_key(args[1], "increment")
            delta = kv.check_u64(args[2], "increment", "delta")
            return await s.store.increment(b, k, delta)

        return await self._result(link, run)

    # ------------------------------------------------------------------ batch

    @operation(f"{BATCH}.get-many", params=("bucket", "keys"))
    async def op_get_many(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> list[list[Any] | None]:
            b, keys = kv.check_bucket(args[0], "get-many"), kv.check_keys(args[1], "get-many")
            values = await s.store.get_many(b, keys) if keys else []
            return [None if v is None else [k, v] for k, v in zip(keys, values, strict=True)]

        return await self._result(link, run, read_only=True)

    @operation(f"{BATCH}.set-many", params=("bucket", "key-values"))
    async def op_set_many(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            b, pairs = kv.check_bucket(args[0], "set-many"), kv.check_pairs(args[1], "set-many")
            if pairs:
                await s.store.set_many(b, pairs)

        return await self._result(link, run)

    @operation(f"{BATCH}.delete-many", params=("bucket", "keys"))
    async def op_delete_many(self, link: Link, args: list[Any]) -> dict[str, Any]:
        async def run(s: _Linked) -> None:
            b, keys = kv.check_bucket(args[0], "delete-many"), kv.check_keys(args[1], "delete-many")
            if keys:
                await s.store.delete_many(b, keys)

        return await self._result(link, run)
