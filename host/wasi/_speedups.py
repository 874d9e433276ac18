"""Speed-ups (and one thread-safety fix) for wasmtime-py 50's component values.

Installed once per process by `host.runtime.engine.new_engine` (and `host.wasi.define`),
so plain components' calls get them as well as the WASI layer's. Seven independent
parts, each behaviour-preserving:

**Byte lists.** wasmtime-py lowers and lifts a `list<u8>` one element at a time: each
byte becomes a 32-byte `wasmtime_component_val_t` filled in by Python, ~2 µs a byte, so
a 64 KiB body chunk costs ~0.1 s each way and a 5 MB HTTP echo ~10 s. The C API has no
bulk byte-list call, so the fast path fills the same array of values with two
extended-slice assignments on a `bytearray` (the kind byte of every element, then the
payload byte of every element) and copies it into the list wasmtime allocated with one
`memmove`; lifting reads the array with one `string_at` and one slice. Both are O(n) in
C. Only `list<u8>` with a bytes-like value takes this path. The layout it relies on
(`kind` at offset 0, the payload union at `wasmtime_component_val_t.of.offset`) is read
from wasmtime-py's ctypes definitions and checked by a round trip before patching.

**Strings.** wasmtime-py lowers a `string` by allocating a byte vector, building a
ctypes array type of the string's length, copying into it and `memmove`-ing it over, and
lifts one through another array built over the vector. The fast path fills the vector
with one `wasm_byte_vec_new` on the encoded bytes and reads it with one `string_at`:
a round trip of "hello" takes 2.4 µs instead of 4.8 µs (checked both ways against
wasmtime-py's own conversions before it is enabled).

**Type introspection.** Every property of a component type (`VariantType.cases`,
`ResultType.ok`, `ListType.element`, ...) asks the C API again and builds fresh Python
objects, and lowering a `variant`/`result`/`option` re-derives whether it is tagged
from all its cases, recursively, on every value: `error-code` alone (39 cases) made a
`result<_, error-code>` cost ~100 FFI calls per host-function return. Types are
immutable, so these properties are memoized per type object.

**Host functions.** wasmtime-py's host-function callback rebuilds the function's
`FuncType` and every parameter type from C on every call, so nothing memoized above
would survive a call. `add_func` registers the function with its own callback that
reads the types once, from the component's import type, when the function is defined
(as `host/runtime/call.py` does for exports). Per host call this took the Python WASI
layer's `GET /` from ~1.4 ms to ~0.5 ms.

**Thread safety.** `VariantLikeType._lower` tested a value's case against a
module-global scratch set (`case_test_cache`) that it clears and refills per case; two
threads lowering at once could test against each other's classes and lower the wrong
case. The replacement computes each case's classes once per type (memoized) and keeps
no shared scratch state; its decisions are otherwise identical.

**GIL-held FFI calls.** wasmtime-py loads libwasmtime with `ctypes.cdll`, so every C
call drops the GIL and takes it back. For the calls that only touch a handle or a type
(a resource's rep, a value's allocation, a type's field) that costs far more than the
call: a wasm thread that gives up the GIL for one has to win it back from the event
loop, each time a futex hand-off, and when the loop is busy it waits for the loop's
next release. One request's WASI HTTP layer makes ~100 such calls. These are rebound
through a `ctypes.PyDLL` handle on the same library (same symbols, same argument
types), which keeps the GIL across the call; a call that runs guest code or compiles
(`func_call`, `post_return`, a resource's guest `drop`, instantiation) still releases
it. Served in the host (`wrk -c32`, one process, 2 CPUs) this took hello_min from
~1.6 ms of CPU a request to ~0.8 ms, and from 740 to 1,330 requests/s.

**Host resources.** A host function's `borrow<T>`/`own<T>` parameter came through
wasmtime-py as a `ResourceAny` (a `Managed` object with a finalizer), was downcast to a
`ResourceHost` (another one) only to read its rep; an `own<T>` result went the same
way back. One request made ~36 of these objects. A top-level resource parameter of a
host function is now read straight from the C value (`any_to_host`, `rep`, both handles
freed) into a `HostRep`, which answers `to_host(store).rep` like the `ResourceAny` it
replaces; a guest resource (the downcast fails) still becomes a `ResourceAny`. An
`own<T>` result may be a `HostOwn(rep, type)`, which `OwnType` lowers with
`host_new` + `host_to_any` and nothing else. Resources inside lists or records still
take wasmtime-py's path. With wasmtime-py's `catch_exceptions` folded into the
host-function trampoline, this took hello_min on to ~0.55 ms a request (2,000/s).
"""

from __future__ import annotations

import ctypes
import itertools
import re
import threading
from collections.abc import Callable
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime import _bindings as bindings
from wasmtime import _ffi as ffi
from wasmtime.component import FuncType, LinkerInstance
from wasmtime.component import _types as wt
from wasmtime.component._types import ListType

_VAL = ffi.wasmtime_component_val_t
_STRIDE = ctypes.sizeof(_VAL)
_PAYLOAD = _VAL.of.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST

try:
    from wasmtime.component import _enter

    _trampoline_ok = hasattr(ffi, "wasmtime_component_linker_instance_add_func")
except ImportError:  # pragma: no cover - a wasmtime-py that reorganised its internals
    _trampoline_ok = False

_original_to_c = ListType.convert_to_c
_original_from_c = ListType.convert_from_c
_lock = threading.Lock()
_installed = False
_fast_bytes = False


def _bytes_to_c(self: ListType, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, bytes | bytearray | memoryview) or not self._is_bytes():
        _original_to_c(self, store, val, ptr)
        return
    n = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        size = n * _STRIDE
        buf = bytearray(size)
        buf[0::_STRIDE] = bytes((_U8,)) * n
        buf[_PAYLOAD::_STRIDE] = val
        ctypes.memmove(raw.data, (ctypes.c_char * size).from_buffer(buf), size)
    ptr.contents.kind = _LIST
    ptr.contents.of.list = raw


def _bytes_from_c(self: ListType, c: Any) -> Any:
    if not self._is_bytes():
        return _original_from_c(self, c)
    n = c.of.list.size
    try:
        return ctypes.string_at(c.of.list.data, n * _STRIDE)[_PAYLOAD::_STRIDE] if n else b""
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def _self_test() -> bool:
    """Lower with the fast path, lift with the original, and the other way round."""
    from wasmtime.component._types import U8

    class _Bytes(ListType):
        def __init__(self) -> None:  # no C type behind it; only `_is_bytes`/`element` used
            pass

        @property
        def element(self) -> Any:
            return U8()

        def _is_bytes(self) -> bool:
            return True

    ty = _Bytes()
    sample = bytes(range(256)) * 3
    val = _VAL()
    _bytes_to_c(ty, None, sample, ctypes.pointer(val))
    ok_fast_to_orig = _original_from_c(ty, val) == sample
    val = _VAL()
    _original_to_c(ty, None, sample, ctypes.pointer(val))
    ok_orig_to_fast = _bytes_from_c(ty, val) == sample
    return ok_fast_to_orig and ok_orig_to_fast


# -- host resources -----------------------------------------------------------------------

_RESOURCE = ffi.WASMTIME_COMPONENT_RESOURCE.value


# libwasmtime again, through a handle whose calls keep the GIL (see the module doc).
# `_HELD[name]` makes a new function object each time (attribute access would share one,
# and its argument types, between `_raw` and the rebinding below).
_HELD = ctypes.PyDLL(ffi.dll._name, handle=ffi.dll._handle)


def _raw(name: str, restype: Any, *argtypes: Any) -> Any:
    """A C function of libwasmtime taking and returning plain addresses, GIL held."""
    fn = _HELD[name]
    fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


_vp = ctypes.c_void_p
_any_to_host = _raw("wasmtime_component_resource_any_to_host", _vp, _vp, _vp, _vp)
_host_to_any = _raw("wasmtime_component_resource_host_to_any", _vp, _vp, _vp, _vp)
_host_new = _raw(
    "wasmtime_component_resource_host_new", _vp, ctypes.c_bool, ctypes.c_uint32, ctypes.c_uint32
)
_host_rep = _raw("wasmtime_component_resource_host_rep", ctypes.c_uint32, _vp)
_host_delete = _raw("wasmtime_component_resource_host_delete", None, _vp)
_any_delete = _raw("wasmtime_component_resource_any_delete", None, _vp)
_error_delete = _raw("wasmtime_error_delete", None, _vp)


# -- strings ------------------------------------------------------------------------------

_STRING = ffi.WASMTIME_COMPONENT_STRING.value
_byte_vec_new = _raw("wasm_byte_vec_new", None, _vp, ctypes.c_size_t, ctypes.c_char_p)
_byte_vec_delete = _raw("wasm_byte_vec_delete", None, _vp)
_original_str_to_c = wt.String.convert_to_c
_original_str_from_c = wt.String.convert_from_c


def _str_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, str):
        raise TypeError("expected string type")
    data = val.encode("utf-8")
    c = ptr.contents
    c.kind = _STRING
    _byte_vec_new(ctypes.addressof(c) + _PAYLOAD, len(data), data)


def _str_from_c(self: Any, c: Any) -> str:
    if c.kind != _STRING:
        raise TypeError("expected a string value")
    vec = c.of.string
    try:
        return ctypes.string_at(vec.data, vec.size).decode("utf-8") if vec.size else ""
    finally:
        _byte_vec_delete(ctypes.addressof(c) + _PAYLOAD)


def _string_test() -> bool:
    """Each fast direction against wasmtime-py's own other direction."""
    ty = wt.String()
    for sample in ("", "hello", "h\u00e9llo\x00w\u00f6rld \u2603" * 50):
        val = _VAL()
        _str_to_c(ty, None, sample, ctypes.pointer(val))
        if _original_str_from_c(ty, val) != sample:
            return False
        val = _VAL()
        _original_str_to_c(ty, None, sample, ctypes.pointer(val))
        if _str_from_c(ty, val) != sample:
            return False
    return True


class HostRep:
    """A host resource a guest passed in, read down to its rep (see the module doc)."""

    __slots__ = ("rep",)

    def __init__(self, rep: int) -> None:
        self.rep = rep

    def to_host(self, store: Any) -> HostRep:
        return self


class HostOwn:
    """A host resource handed to a guest as `own<T>`: its rep and resource type id."""

    __slots__ = ("rep", "type_id")

    def __init__(self, rep: int, type_id: int) -> None:
        self.rep, self.type_id = rep, type_id


def _lift_resource(ty: Any, ctx: Any, val: Any) -> Any:
    """A resource parameter: a `HostRep` for a host resource, else wasmtime-py's value."""
    slot = _vp.from_address(ctypes.addressof(val) + _PAYLOAD)
    host = _vp()
    err = _any_to_host(ctx, slot.value, ctypes.byref(host))
    if err:  # a guest resource
        _error_delete(err)
        return ty.convert_from_c(val)
    try:
        return HostRep(_host_rep(host))
    finally:
        _host_delete(host)
        _any_delete(slot.value)
        slot.value = None


_original_own_to_c = wt.OwnType.convert_to_c
_original_own_classes = wt.OwnType.add_classes


def _own_to_c(self: Any, store: Any, val: Any, ptr: Any) -> None:
    if not isinstance(val, HostOwn):
        _original_own_to_c(self, store, val, ptr)
        return
    host = _host_new(True, val.rep, val.type_id)
    out = _vp()
    try:
        err = _host_to_any(store._context(), host, ctypes.byref(out))
    finally:
        _host_delete(host)
    if err:
        raise WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))
    addr = ctypes.addressof(ptr.contents)
    ctypes.c_uint8.from_address(addr).value = _RESOURCE
    _vp.from_address(addr + _PAYLOAD).value = out.value


def _own_classes(self: Any, s: set[type]) -> None:
    _original_own_classes(self, s)
    s.add(HostOwn)


def _resource_test() -> bool:
    """A host resource through both fast paths and back through wasmtime-py's own."""
    from wasmtime import Engine, Store
    from wasmtime.component import ResourceAny, ResourceType

    store = Store(Engine())
    ty = wt.OwnType(ResourceType.host(77))
    val = _VAL()
    _own_to_c(ty, store, HostOwn(1234, 77), ctypes.pointer(val))
    lifted = _lift_resource(ty, store._context(), val)
    if not isinstance(lifted, HostRep) or lifted.rep != 1234:
        return False
    val = _VAL()
    _own_to_c(ty, store, HostOwn(99, 77), ctypes.pointer(val))
    back = ty.convert_from_c(val)
    return isinstance(back, ResourceAny) and back.to_host(store).rep == 99


_fast_resources = False


def fast_resources() -> bool:
    """Whether host functions may return `HostOwn` (the patch is installed)."""
    return _fast_resources


# -- host functions with cached types ---------------------------------------------------

_HOST_FUNCS: dict[int, tuple[Callable[..., Any], list[Any], Any, list[bool] | None]] = {}
_host_func_ids = itertools.count(1)


@ffi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _host_func_trampoline(
    idx: Any, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    """wasmtime-py's `func_impl` with its `catch_exceptions` folded in, and with
    parameter and result types read once per function (at definition) instead of
    rebuilt from `ty_raw` on every call."""
    func, params, result, resources = _HOST_FUNCS[idx or 0]
    store = StoreContext(context)
    failure: WasmtimeError | None = None
    try:
        if resources:
            pyargs = [
                _lift_resource(ty, context, args[i]) if res else ty.convert_from_c(args[i])
                for i, (ty, res) in enumerate(zip(params, resources, strict=True))
            ]
        else:
            pyargs = [ty.convert_from_c(args[i]) for i, ty in enumerate(params)]
        value = func(store, *pyargs)
        if result is not None:
            result.convert_to_c(store, value, results)
    except WasmtimeError as exc:
        failure = exc
    except Exception as exc:  # as catch_exceptions: kept for wasmtime-py to re-raise
        _enter.LAST_EXCEPTION = exc
        failure = WasmtimeError("python exception")
    finally:
        store._invalidate()
    if failure is not None:
        return ctypes.cast(failure._consume(), _vp).value or 0
    return 0


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _host_func_finalize(idx: Any) -> None:
    _HOST_FUNCS.pop(idx or 0, None)


def add_func(inst: LinkerInstance, name: str, func: Callable[..., Any], fty: FuncType) -> None:
    """`inst.add_func(name, func)` for a function whose type is known to be `fty`.

    Same calling convention (`func(store_context, *params)`), same error handling
    (as wasmtime-py's `catch_exceptions`); the types come from `fty`, so their memoized
    introspection is reused across calls. Falls back to `add_func` when wasmtime-py's
    internals are not what this was written against.
    """
    if not _trampoline_ok:
        inst.add_func(name, func)
        return
    params = [ty for _, ty in fty.params]
    resources = [isinstance(ty, wt.OwnType | wt.BorrowType) for ty in params]
    idx = next(_host_func_ids)
    _HOST_FUNCS[idx] = (
        func,
        params,
        fty.result,
        resources if _fast_resources and any(resources) else None,
    )
    name_bytes = name.encode("utf-8")
    err = ffi.wasmtime_component_linker_instance_add_func(
        inst.ptr(),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        _host_func_trampoline,
        idx,
        _host_func_finalize,
    )
    if err:
        _HOST_FUNCS.pop(idx, None)
        raise WasmtimeError._from_ptr(err)


def define_func(
    inst: LinkerInstance, name: str, func: Callable[..., Any], fty: FuncType | None
) -> None:
    """`add_func` with the speed-ups installed, when the function's type is at hand (the
    lattice's import bridge and host services), else wasmtime-py's own `add_func`.

    Measured on `bench provider`: wasmtime-py's callback spent ~25 % of the host's
    CPU re-reading the `result<u64, error>` of `wasi:keyvalue/atomics.increment` from C
    on every return."""
    if fty is None:
        inst.add_func(name, func)
        return
    install()
    add_func(inst, name, func, fty)


# -- memoized type introspection --------------------------------------------------------

_MEMOIZED_PROPERTIES = (
    ("VariantType", "cases"),
    ("ResultType", "ok"),
    ("ResultType", "err"),
    ("OptionType", "payload"),
    ("ListType", "element"),
    ("TupleType", "elements"),
    ("RecordType", "fields"),
    ("EnumType", "names"),
    ("FlagsType", "names"),
)


def _memoize_property(cls: type, name: str) -> None:
    prop = cls.__dict__.get(name)
    if not isinstance(prop, property) or prop.fget is None:
        return
    fget = prop.fget
    slot = f"_lattice_memo_{name}"

    def get(self: Any) -> Any:
        try:
            return self.__dict__[slot]
        except KeyError:
            value = self.__dict__[slot] = fget(self)
            return value

    get.__doc__ = fget.__doc__
    setattr(cls, name, property(get))


_original_tagged = wt.VariantLikeType._tagged


def _tagged(self: Any) -> bool:
    try:
        return bool(self.__dict__["_lattice_memo_tagged"])
    except KeyError:
        value = self.__dict__["_lattice_memo_tagged"] = _original_tagged(self)
        return bool(value)


def _case_classes(self: Any) -> list[tuple[str, Any, tuple[type, ...]]]:
    try:
        return self.__dict__["_lattice_memo_case_classes"]  # type: ignore[no-any-return]
    except KeyError:
        out = []
        for name, ty in self._cases():
            classes: set[type] = set()
            if ty is not None:
                ty.add_classes(classes)
            out.append((name, ty, tuple(classes)))
        self.__dict__["_lattice_memo_case_classes"] = out
        return out


def _lower(self: Any, store: Any, val: Any) -> tuple[str, Any]:
    """wasmtime-py's `VariantLikeType._lower`, without the shared scratch set."""
    tagged = self._tagged()
    if tagged and not isinstance(val, wt.Variant):
        raise TypeError("expected Variant type")
    for name, ty, classes in _case_classes(self):
        if tagged:
            if name != val.tag:
                continue
        elif ty is None:
            if val is not None:
                continue
        elif not isinstance(val, classes):
            continue
        if ty is None:
            return (name, None)
        raw = ffi.wasmtime_component_val_t()
        ty.convert_to_c(store, val.payload if tagged else val, ctypes.pointer(raw))
        return (name, ffi.wasmtime_component_val_new(ctypes.byref(raw)))
    raise ValueError("value not valid for this variant")


# -- GIL-held FFI calls -----------------------------------------------------------------

# Calls on handles, values and types only: none runs wasm, blocks or calls back.
_GIL_HELD = re.compile(
    r"_wasmtime_component_(resource_(host|type)_\w+|resource_any_(type|clone|owned|delete"
    r"|to_host)|val\w*|\w+_type_\w+|func_type|instance_get_(func|export_index)"
    r"|type_\w+)|_wasmtime_context_(get_data|set_epoch_deadline|get_fuel|set_fuel)"
    r"|_wasm_byte_vec_\w+"
)


def _hold_gil_in_cheap_calls() -> int:
    """Rebind the cheap C calls through a PyDLL handle; returns how many."""
    done = 0
    for name, fn in list(vars(bindings).items()):
        if not isinstance(fn, ctypes._CFuncPtr) or not _GIL_HELD.fullmatch(name):  # type: ignore[attr-defined]
            continue
        held = _HELD[name[1:]]
        held.argtypes, held.restype = fn.argtypes, fn.restype
        setattr(bindings, name, held)
        done += 1
    return done


def install() -> bool:
    """Apply the patches once; returns whether the fast byte path is active."""
    global _installed, _fast_bytes, _fast_resources
    with _lock:
        if _installed:
            return _fast_bytes
        if _PAYLOAD >= 1 and _self_test():
            ListType.convert_to_c = _bytes_to_c  # type: ignore[method-assign]
            ListType.convert_from_c = _bytes_from_c  # type: ignore[method-assign]
            _fast_bytes = True
        for cls_name, prop in _MEMOIZED_PROPERTIES:
            cls = getattr(wt, cls_name, None)
            if cls is not None:
                _memoize_property(cls, prop)
        wt.VariantLikeType._tagged = _tagged  # type: ignore[method-assign]
        wt.VariantLikeType._lower = _lower  # type: ignore[method-assign]
        _hold_gil_in_cheap_calls()
        if _string_test():
            wt.String.convert_to_c = _str_to_c  # type: ignore[method-assign]
            wt.String.convert_from_c = _str_from_c  # type: ignore[method-assign]
        if _resource_test():
            wt.OwnType.convert_to_c = _own_to_c  # type: ignore[method-assign]
            wt.OwnType.add_classes = _own_classes  # type: ignore[method-assign]
            _fast_resources = True
        _installed = True
        return _fast_bytes
