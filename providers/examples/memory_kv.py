"""An in-memory wasi:keyvalue store: the complete SDK example of docs/providers.md.

Every link gets its own dict, so two linked components never see each other's data.
Run it like any provider: `python -m providers.examples.memory_kv` with host data on stdin.
"""

from __future__ import annotations

from typing import Any

from providers.sdk import ErrorKind, InvocationError, Link, LinkKey, Provider, operation, run

STORE = "wasi:keyvalue/store"
Table = dict[tuple[str, ...], bytes]


def _strings(*values: Any) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise InvocationError(ErrorKind.BAD_ARGUMENT, "bucket and key must be strings")
    return values


class MemoryKV(Provider):
    async def on_start(self) -> None:
        self.tables: dict[LinkKey, Table] = {}

    async def on_link_put(self, link: Link) -> None:
        self.tables[link.key] = {}

    async def on_link_del(self, link: Link) -> None:
        self.tables.pop(link.key, None)

    async def health(self) -> tuple[bool, str]:
        return True, f"{len(self.tables)} link(s)"

    @operation(f"{STORE}.bucket.get", params=("bucket", "key"))
    async def get(self, link: Link, args: list[Any]) -> dict[str, Any]:
        return {"ok": self.tables[link.key].get(_strings(*args))}

    @operation(f"{STORE}.bucket.set", params=("bucket", "key", "value"))
    async def set(self, link: Link, args: list[Any]) -> dict[str, Any]:
        if not isinstance(args[2], bytes):
            raise InvocationError(ErrorKind.BAD_ARGUMENT, "value must be bin")
        self.tables[link.key][_strings(*args[:2])] = args[2]
        return {"ok": None}

    @operation(f"{STORE}.bucket.delete", params=("bucket", "key"))
    async def delete(self, link: Link, args: list[Any]) -> dict[str, Any]:
        self.tables[link.key].pop(_strings(*args), None)
        return {"ok": None}

    @operation(f"{STORE}.bucket.exists", params=("bucket", "key"))
    async def exists(self, link: Link, args: list[Any]) -> dict[str, Any]:
        return {"ok": _strings(*args) in self.tables[link.key]}


if __name__ == "__main__":
    run(MemoryKV)
