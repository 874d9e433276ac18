"""Fast `list<u8>` conversion for wasmtime-py 50 (installed once by `host.wasi.define`).

wasmtime-py lowers and lifts a `list<u8>` one element at a time: each byte becomes a
24-byte `wasmtime_component_val_t` filled in by Python (`U8.convert_to_c`), ~2 µs a
byte. A 64 KiB body chunk then costs ~0.1 s each way and a 5 MB HTTP echo ~10 s. The
C API has no bulk byte-list call, so this module fills the same array of values with
two extended-slice assignments on a `bytearray` (the kind byte of every element, then
the payload byte of every element) and copies it into the list wasmtime allocated with
one `memmove`; lifting reads the array with one `string_at` and one slice. Both are
O(n) in C, ~200x faster.

The replacement methods are patched onto `wasmtime.component._types.ListType` and only
take the byte-list path for `list<u8>` with a bytes-like value; everything else goes to
the original methods. The layout they rely on (`kind` at offset 0, the payload union at
`wasmtime_component_val_t.of.offset`, `U8` kind) is read from wasmtime-py's own ctypes
definitions, and `install()` checks it round-trips before patching; if anything looks
different it leaves wasmtime-py alone (correct, just slow).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from wasmtime import _ffi as ffi
from wasmtime.component._types import ListType

_VAL = ffi.wasmtime_component_val_t
_STRIDE = ctypes.sizeof(_VAL)
_PAYLOAD = _VAL.of.offset
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST

_original_to_c = ListType.convert_to_c
_original_from_c = ListType.convert_from_c
_lock = threading.Lock()
_installed = False


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


def install() -> bool:
    """Patch `ListType` once; returns whether the fast path is active."""
    global _installed
    with _lock:
        if not _installed and _PAYLOAD >= 1 and _self_test():
            ListType.convert_to_c = _bytes_to_c  # type: ignore[method-assign]
            ListType.convert_from_c = _bytes_from_c  # type: ignore[method-assign]
            _installed = True
        return _installed
