"""Speed-ups (and one thread-safety fix) for wasmtime-py 50's component values.

Installed once by `host.wasi.define`. Four independent parts, each behaviour-preserving:

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
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Callable
from typing import Any

from wasmtime import StoreContext, WasmtimeError
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
    from wasmtime.component._enter import catch_exceptions

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


# -- host functions with cached types ---------------------------------------------------

_HOST_FUNCS: dict[int, tuple[Callable[..., Any], list[Any], Any]] = {}
_host_func_ids = itertools.count(1)


@ffi.wasmtime_component_func_callback_t  # type: ignore[untyped-decorator]
def _host_func_trampoline(
    idx: Any, context: Any, ty_raw: Any, args: Any, nargs: int, results: Any, nresults: int
) -> int:
    """wasmtime-py's `func_impl`, with parameter and result types read once per function
    (at definition) instead of rebuilt from `ty_raw` on every call."""
    func, params, result = _HOST_FUNCS[idx or 0]

    def run(store: StoreContext) -> None:
        pyargs = [ty.convert_from_c(args[i]) for i, ty in enumerate(params)]
        value = func(store, *pyargs)
        if result is not None:
            result.convert_to_c(store, value, results)

    return catch_exceptions(context, run)  # type: ignore[no-any-return]


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _host_func_finalize(idx: Any) -> None:
    _HOST_FUNCS.pop(idx or 0, None)


def add_func(inst: LinkerInstance, name: str, func: Callable[..., Any], fty: FuncType) -> None:
    """`inst.add_func(name, func)` for a function whose type is known to be `fty`.

    Same calling convention (`func(store_context, *params)`), same error handling
    (wasmtime-py's `catch_exceptions`); the types come from `fty`, so their memoized
    introspection is reused across calls. Falls back to `add_func` when wasmtime-py's
    internals are not what this was written against.
    """
    if not _trampoline_ok:
        inst.add_func(name, func)
        return
    params = [ty for _, ty in fty.params]
    idx = next(_host_func_ids)
    _HOST_FUNCS[idx] = (func, params, fty.result)
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


def install() -> bool:
    """Apply the patches once; returns whether the fast byte path is active."""
    global _installed, _fast_bytes
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
        _installed = True
        return _fast_bytes
