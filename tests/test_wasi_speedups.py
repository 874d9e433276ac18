"""host.wasi._speedups: the C calls that keep the GIL, and host resources read and
lowered without wasmtime-py's handle objects. The WASI HTTP tests
(test_wasi_http_layer.py, test_http_in_host.py) run every request through both; these
check the parts that no request would show wrong."""

from __future__ import annotations

import ctypes
import threading

import pytest
from wasmtime import Engine, Store
from wasmtime import _bindings as bindings
from wasmtime.component import ResourceAny, ResourceHost, ResourceType
from wasmtime.component import _types as wt

from host.wasi import _speedups
from host.wasi.binding import lower_own
from host.wasi.state import WasiState

_PYTHONAPI = ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    _speedups.install()
    assert _speedups.fast_resources()


def _holds_gil(name: str) -> bool:
    return bool(getattr(bindings, name)._flags_ & _PYTHONAPI)


def test_cheap_calls_keep_the_gil_and_calls_into_wasm_release_it() -> None:
    for name in (
        "_wasmtime_component_resource_host_rep",
        "_wasmtime_component_resource_any_to_host",
        "_wasmtime_component_val_new",
        "_wasmtime_component_vallist_delete",
        "_wasmtime_component_func_type_param_nth",
        "_wasmtime_context_get_data",
        "_wasmtime_context_set_epoch_deadline",
    ):
        assert _holds_gil(name), name
    # these run guest code (or compile, or instantiate): other threads must run meanwhile
    for name in (
        "_wasmtime_component_func_call",
        "_wasmtime_component_func_post_return",
        "_wasmtime_component_resource_any_drop",
        "_wasmtime_component_linker_instantiate",
        "_wasmtime_component_new",
    ):
        assert not _holds_gil(name), name


def test_rebinding_keeps_argument_and_result_types() -> None:
    name = "wasmtime_component_resource_host_new"
    held = getattr(bindings, "_" + name)
    assert held.restype is ctypes.POINTER(bindings.wasmtime_component_resource_host_t)
    assert held.argtypes == [ctypes.c_bool, ctypes.c_uint32, ctypes.c_uint32]
    # what the GIL-held handle builds, the library's ordinary (releasing) handle reads back
    releasing = ctypes.CDLL(bindings.dll._name, handle=bindings.dll._handle)

    def plain(fn: str, restype: object) -> object:
        f = getattr(releasing, fn)
        f.restype, f.argtypes = restype, [ctypes.c_void_p]
        return f

    assert not plain("wasmtime_component_resource_host_rep", ctypes.c_uint32)._flags_ & _PYTHONAPI
    # the fast resource path's own bindings keep their plain-address types
    own = _speedups._host_to_any
    assert own is not bindings._wasmtime_component_resource_host_to_any
    assert own.argtypes == [ctypes.c_void_p] * 3
    ptr = held(True, 41, 7)
    try:
        assert plain("wasmtime_component_resource_host_rep", ctypes.c_uint32)(ptr) == 41
        assert plain("wasmtime_component_resource_host_type", ctypes.c_uint32)(ptr) == 7
        assert plain("wasmtime_component_resource_host_owned", ctypes.c_bool)(ptr)
    finally:
        plain("wasmtime_component_resource_host_delete", None)(ptr)


def _lowered(store: Store, value: object, type_id: int) -> bindings.wasmtime_component_val_t:
    val = bindings.wasmtime_component_val_t()
    wt.OwnType(ResourceType.host(type_id)).convert_to_c(store, value, ctypes.pointer(val))
    return val


def test_host_own_round_trips_to_a_rep_and_to_wasmtime_py() -> None:
    store = Store(Engine())
    ty = wt.OwnType(ResourceType.host(9))
    val = _lowered(store, _speedups.HostOwn(123, 9), 9)
    lifted = _speedups._lift_resource(ty, store._context(), val)
    assert isinstance(lifted, _speedups.HostRep)
    assert lifted.rep == 123 and lifted.to_host(store).rep == 123
    # the C value gave its handle away: nothing left for wasmtime to free twice
    slot = ctypes.c_void_p.from_address(ctypes.addressof(val) + _speedups._PAYLOAD)
    assert slot.value is None
    # wasmtime-py's own lifting sees the same resource
    back = ty.convert_from_c(_lowered(store, _speedups.HostOwn(5, 9), 9))
    assert isinstance(back, ResourceAny)
    host = back.to_host(store)
    assert (host.rep, host.type, host.owned) == (5, 9, True)
    # and wasmtime-py's own values still lower as before
    again = ty.convert_from_c(_lowered(store, ResourceHost.own(6, 9), 9))
    assert again.to_host(store).rep == 6


def test_lower_own_puts_the_object_in_the_table_and_refuses_others() -> None:
    from host.wasi.binding import HostResource

    class Thing(HostResource):
        type_id = 31

    state = WasiState()
    thing = Thing()
    own = lower_own(state, thing)
    assert isinstance(own, _speedups.HostOwn)
    assert own.type_id == 31 and state.table.get(own.rep) is thing
    with pytest.raises(Exception, match="expected a host resource, got int"):
        lower_own(state, 42)


def test_resources_convert_on_many_threads_at_once() -> None:
    """Each wasm thread lowers and lifts its own store's resources (as under load)."""
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            store = Store(Engine())
            ty = wt.OwnType(ResourceType.host(3))
            for i in range(2000):
                val = _lowered(store, _speedups.HostOwn(offset + i, 3), 3)
                lifted = _speedups._lift_resource(ty, store._context(), val)
                assert lifted.rep == offset + i
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_new_engine_installs_the_speedups_for_plain_components_too() -> None:
    """In a fresh process (this module's fixture installed them here already): making an
    engine is enough, no WASI component has to be linked first."""
    import subprocess
    import sys

    check = """
import ctypes
from wasmtime import _bindings as b
from wasmtime.component import _types as wt
from host.wasi import _speedups
held = lambda name: bool(getattr(b, name)._flags_ & ctypes._FUNCFLAG_PYTHONAPI)
before = held("_wasmtime_context_set_epoch_deadline"), wt.String.convert_to_c
from host.runtime.engine import new_engine
new_engine()
assert before == (False, _speedups._original_str_to_c), before
assert held("_wasmtime_context_set_epoch_deadline")
assert wt.String.convert_to_c is _speedups._str_to_c
assert wt.String.convert_from_c is _speedups._str_from_c
# the thread-safe variant lowering: a plain component's pool lowers on many threads
assert wt.VariantLikeType._lower is _speedups._lower
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    "text",
    ["", "hello", "h\u00e9llo\x00w\u00f6rld \u2603\U0001f600", "x" * 300_000],
    ids=["empty", "ascii", "non-ascii-and-nul", "300k"],
)
async def test_strings_round_trip_through_a_real_component(text: str) -> None:
    from pathlib import Path

    from wasmtime.component import Linker

    from components.build import build
    from host.config import Limits
    from host.runtime.engine import CompileCache, EpochTicker, new_engine
    from host.runtime.exports import list_exports, resolve
    from host.runtime.pool import InstancePool
    from lattice.protocol.invocation import ErrorKind, InvocationError

    engine = new_engine()
    ticker = EpochTicker(engine)
    ticker.start()
    cache = CompileCache(engine, Path(__file__).parent.parent / ".cache" / "test-host" / "cache")
    component = cache.load(build("echo_min").read_bytes()).component
    exports = list_exports(engine, component)
    pool = InstancePool(
        component_id="echo-min",
        engine=engine,
        linker=Linker(engine),
        component=component,
        exports=exports,
        limits=Limits(timeout_ms=10_000, memory_mb=64),
        max_instances=2,
    )
    try:
        export = resolve(exports, "lattice:examples/echo.echo")
        assert await pool.call(export, [text]) == text
        with pytest.raises(InvocationError) as bad:
            await pool.call(export, [b"not a string"])
        assert bad.value.kind == ErrorKind.BAD_ARGUMENT, bad.value
        assert "argument 'msg': expected string" in str(bad.value)
        assert await pool.call(export, [text]) == text  # the refused call left it serving
    finally:
        await pool.drain()
        ticker.stop()
