"""The accounting rule every storage provider follows, in one place.

An `err` result promises that nothing was applied. A write whose outcome is unknown (no
answer within the operation timeout, or the connection lost after the command went out)
may have been applied, so it is not an `err` but an invocation error of kind `timeout`,
as if the caller's own deadline had passed. A read changes nothing, so its lost answer
stays an `err`. Nothing here retries: a store retries only where it knows it is safe.

Each family (keyvalue, blobstore) has its own error types, whose `wire` is what its WIT
sends; `Errors` names them, so this module stays free of either WIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from lattice.protocol.invocation import ErrorKind, InvocationError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Errors:
    """A family's errors: `base` is answered as `err`; `unavailable` (a subclass) also
    marks the backend down; `indeterminate` (a subclass of that) is an unknown outcome;
    `make_indeterminate(backend, detail)` builds one for a timeout."""

    base: type[Exception]
    unavailable: type[Exception]
    indeterminate: type[Exception]
    make_indeterminate: Callable[[str, str], Exception]


class BackendGuard:
    """Runs backend operations under the rule above, and logs each outage once."""

    def __init__(self, backend: str, errors: Errors, log: Any) -> None:
        self.backend = backend
        self.errors = errors
        self.log: structlog.typing.FilteringBoundLogger = log
        self.down: set[str] = set()

    async def result(
        self,
        where: str,
        call: Callable[[], Awaitable[T]],
        timeout: float,
        *,
        read_only: bool = False,
        on_error: Callable[[Exception], None] | None = None,
    ) -> dict[str, Any]:
        """`{"ok": value}` or `{"err": wire}`; raises InvocationError(timeout) for a
        write whose outcome is unknown."""
        e = self.errors
        try:
            try:
                async with asyncio.timeout(timeout):  # no task per call (see dispatch.py)
                    value = await call()
            except TimeoutError:
                raise e.make_indeterminate(self.backend, f"no answer within {timeout:g}s") from None
        except e.base as exc:
            if isinstance(exc, e.unavailable):
                if where not in self.down:
                    self.down.add(where)
                    self.log.warning("backend unavailable", store=where, error=str(exc))
                if isinstance(exc, e.indeterminate) and not read_only:
                    raise InvocationError(
                        ErrorKind.TIMEOUT, f"{where}: {exc}; the outcome is unknown"
                    ) from None
            elif on_error is not None:
                on_error(exc)
            return {"err": exc.wire}  # type: ignore[attr-defined]
        if where in self.down:
            self.down.discard(where)
            self.log.info("backend available again", store=where)
        return {"ok": value}


def short(text: str, limit: int = 60) -> str:
    """repr of `text`, cut for messages (keys and names may be long)."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 1] + "…")


def page_size(raw: str | None, default: int, maximum: int) -> int:
    """A `page_size` link setting; ValueError (refusing the link) when malformed."""
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        raise ValueError(f"page_size must be an integer, got {short(raw)}") from None
    if not 1 <= size <= maximum:
        raise ValueError(f"page_size must be between 1 and {maximum}, got {size}")
    return size
