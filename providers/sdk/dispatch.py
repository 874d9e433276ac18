"""One invocation, from request bytes to reply bytes, with every failure typed.

`invoke` finds the operation, the link (from the `source-id` and `link-name` headers),
decodes the msgpack arguments, runs the handler under the provider's call timeout and
encodes the result. Every failure becomes an error reply (header `lattice-error` and
msgpack `{"kind", "message"}`): unknown operation -> `unknown-function`, a link that failed ->
`unavailable`, bad msgpack or argument count -> `bad-argument`, a handler's
`InvocationError` as raised, a timeout -> `timeout`, any other exception -> `internal`.
A link the provider does not hold is first asked for (the hand-off in docs/protocol.md);
still none -> `not-linked`, a promise that nothing was done.
Nothing here raises (except cancellation) and nothing touches NATS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from lattice import codec
from lattice.protocol.invocation import (
    ERROR_HEADER,
    HOST_HEADER,
    LINK_NAME_HEADER,
    SOURCE_HEADER,
    ErrorKind,
    InvocationError,
)
from providers.sdk.provider import Operation, Provider

Reply = tuple[dict[str, str] | None, bytes]


def error_reply(host_id: str, err: InvocationError) -> Reply:
    return {HOST_HEADER: host_id, ERROR_HEADER: str(err.kind)}, codec.pack(err.to_body())


def _args(op: Operation, data: bytes) -> list[Any]:
    try:
        raw = codec.unpack(data) if data else None
    except codec.CodecError as exc:
        raise InvocationError(ErrorKind.BAD_ARGUMENT, f"{op.name}: {exc}") from None
    if raw is None:
        raw = []
    want = op.params
    expects = "" if want is None else f" ({', '.join(want)})"
    if isinstance(raw, dict):
        if want is None:
            raise InvocationError(
                ErrorKind.BAD_ARGUMENT, f"{op.name}: arguments must be an array, got a map"
            )
        unknown = [str(k) for k in raw if k not in want]
        missing = [p for p in want if p not in raw]
        if unknown or missing:
            what = "; ".join(
                part
                for part in (
                    f"unknown argument(s) {', '.join(unknown)}" if unknown else "",
                    f"missing argument(s) {', '.join(missing)}" if missing else "",
                )
                if part
            )
            raise InvocationError(ErrorKind.BAD_ARGUMENT, f"{op.name}{expects}: {what}")
        return [raw[p] for p in want]
    if not isinstance(raw, list):
        raise InvocationError(
            ErrorKind.BAD_ARGUMENT,
            f"{op.name}: arguments must be an array, got {type(raw).__name__}",
        )
    if want is not None and len(raw) != len(want):
        raise InvocationError(
            ErrorKind.BAD_ARGUMENT,
            f"{op.name}: expected {len(want)} argument(s){expects}, got {len(raw)}",
        )
    return raw


async def invoke(
    provider: Provider, op_name: str, headers: Mapping[str, str] | None, data: bytes
) -> Reply:
    """Serve one call; returns the reply headers (None for none) and body."""
    headers = headers or {}
    source = headers.get(SOURCE_HEADER, "")
    link_name = headers.get(LINK_NAME_HEADER) or "default"
    log = provider.log.bind(operation=op_name, source_id=source, link_name=link_name)
    started = time.monotonic()
    try:
        result = await _call(provider, op_name, source, link_name, data)
        body = codec.pack(result)
    except InvocationError as err:
        log.info("call failed", kind=str(err.kind), error=err.message)
        return error_reply(provider.host_id, err)
    except codec.CodecError as exc:
        log.error("result cannot be encoded", error=str(exc))
        err = InvocationError(ErrorKind.INTERNAL, f"{op_name}: result cannot be encoded: {exc}")
        return error_reply(provider.host_id, err)
    log.debug("call", ms=round((time.monotonic() - started) * 1000, 2))
    return ({HOST_HEADER: provider.host_id} if headers else None), body


def _not_linked(provider: Provider, source: str, link_name: str, op_name: str) -> InvocationError:
    """The hand-off's `not-linked`: nothing was done, so the caller may send it again."""
    return InvocationError(
        ErrorKind.NOT_LINKED,
        f"no link from source {source!r} (link name {link_name!r}) to provider "
        f"{provider.provider_id!r} for {op_name}; nothing was done",
    )


async def _call(provider: Provider, op_name: str, source: str, link_name: str, data: bytes) -> Any:
    op = provider.operations.get(op_name)
    if op is None:
        served = ", ".join(sorted(provider.operations)) or "nothing"
        raise InvocationError(
            ErrorKind.UNKNOWN_FUNCTION,
            f"provider {provider.provider_id} does not serve {op_name!r}; it serves: {served}",
        )
    if not source:
        raise InvocationError(
            ErrorKind.UNAVAILABLE,
            f"call to {op_name} carries no '{SOURCE_HEADER}' header; provider "
            f"{provider.provider_id} serves linked components only",
        )
    link = provider.find_link(source, link_name, op_name)
    if link is None:  # perhaps the hand-off's prepare has not reached us yet: ask
        link = await provider.resolve_missing(source, link_name, op_name)
    if link is None:
        why = provider.link_failure(source, link_name)
        if why:
            raise InvocationError(
                ErrorKind.UNAVAILABLE,
                f"no link from source {source!r} (link name {link_name!r}) to provider "
                f"{provider.provider_id!r} for {op_name}: the link failed: {why}",
            )
        raise _not_linked(provider, source, link_name, op_name)
    args = _args(op, data)
    try:
        async with provider.calling(link) as current:
            if current is None:  # drained or replaced while the call waited
                raise _not_linked(provider, source, link_name, op_name)
            # a timeout scope, not `wait_for`: on 3.11 that wraps the handler in a task
            # of its own, one more loop turn per call
            async with asyncio.timeout(provider.call_timeout):
                return await op.handler(current, args)
    except InvocationError:
        raise
    except TimeoutError:
        raise InvocationError(
            ErrorKind.TIMEOUT, f"{op_name} did not finish within {provider.call_timeout:g}s"
        ) from None
    except Exception as exc:
        provider.log.exception("handler failed", operation=op_name, source_id=source)
        raise InvocationError(
            ErrorKind.INTERNAL, f"{op_name} failed: {type(exc).__name__}: {exc}"
        ) from None
