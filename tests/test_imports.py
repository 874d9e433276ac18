"""Import bridging: component-to-component links, missing links, dead targets."""

from __future__ import annotations

import asyncio

import pytest

from host.runtime.imports import error_fallback
from lattice.client import LatticeClient
from lattice.protocol.invocation import ErrorKind, InvocationError
from lattice.valtype import FuncSig, Prim, ResultT, VariantT

RELAY = "lattice:examples/relay"


async def test_component_calls_component_through_a_link(
    start_host, client: LatticeClient, linked_refs: dict[str, str]
) -> None:
    a = await start_host()
    b = await start_host()
    await client.scale_component(a.host_id, linked_refs["caller"], "caller", 2)
    await client.scale_component(b.host_id, linked_refs["greeter"], "greeter", 2)
    await client.put_link("caller", "greeter", "lattice", "examples", ["greet"])

    assert await client.call("caller", f"{RELAY}.relay-hello", ["Ada"]) == "Hello, Ada!"
    assert await client.call("caller", f"{RELAY}.relay-shout", [["a", "b"]]) == {"ok": "A B"}
    assert await client.call("caller", f"{RELAY}.relay-shout", [[]]) == {"err": "nothing to shout"}


async def test_missing_link_fails_fast_naming_the_import(
    host, client: LatticeClient, linked_refs: dict[str, str]
) -> None:
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(InvocationError) as no_link:
        await client.call("caller", f"{RELAY}.relay-hello", ["x"], timeout=20)
    assert loop.time() - started < 2
    assert no_link.value.kind is ErrorKind.TRAP
    msg = no_link.value.message
    assert "component caller" in msg and "lattice:examples/greet" in msg and "'default'" in msg
    assert "no link" in msg
    # result<string, string>: the guest receives an err instead of a trap
    assert (await client.call("caller", f"{RELAY}.relay-shout", [["x"]]))["err"].startswith(
        "component caller import lattice:examples/greet"
    )


async def test_dead_target_fails_fast(
    host, client: LatticeClient, linked_refs: dict[str, str]
) -> None:
    await client.scale_component(host.host_id, linked_refs["caller"], "caller", 1)
    await client.put_link("caller", "nobody-home", "lattice", "examples", ["greet"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(InvocationError) as dead:
        await client.call("caller", f"{RELAY}.relay-hello", ["x"], timeout=20)
    assert loop.time() - started < 2
    assert "nobody-home is not running" in dead.value.message
    # and the instance that trapped was replaced: the next linked call works
    await client.scale_component(host.host_id, linked_refs["greeter"], "nobody-home", 1)
    assert await client.call("caller", f"{RELAY}.relay-hello", ["y"]) == "Hello, y!"


async def test_link_name_chosen_by_config(
    host, client: LatticeClient, linked_refs: dict[str, str]
) -> None:
    await client.scale_component(host.host_id, linked_refs["greeter"], "greeter-a", 1)
    await client.scale_component(
        host.host_id, linked_refs["caller"], "caller", 1, config=["caller-links"]
    )
    await client.put_config("caller-links", {"link-name.lattice:examples": "alt"})
    await client.put_link("caller", "greeter-a", "lattice", "examples", ["greet"], name="alt")
    assert await client.call("caller", f"{RELAY}.relay-hello", ["z"]) == "Hello, z!"
    # switching the config back to "default" (no such link) takes effect on the next call
    await client.put_config("caller-links", {"link-name.lattice:examples": "default"})
    with pytest.raises(InvocationError, match="'default'"):
        await client.call("caller", f"{RELAY}.relay-hello", ["z"])


def test_an_unreachable_link_is_the_wits_own_catch_all_error_not_a_trap() -> None:
    """wasmcloud:postgres says `unexpected(string)`, wasi:keyvalue `other(string)`: both
    get the bridge's message; a variant with no catch-all case still traps (no guess)."""
    s = Prim("string")

    def sig(*cases: str) -> FuncSig:
        return FuncSig(params=(), result=ResultT(ok=s, err=VariantT(tuple((c, s) for c in cases))))

    for catch_all in ("other", "unexpected"):
        got = error_fallback(sig("invalid-params", catch_all), "no link for wasmcloud:postgres")
        assert (got.tag, got.payload) == (catch_all, "no link for wasmcloud:postgres")
    assert error_fallback(sig("invalid-params"), "no link") is None
