"""The lattice wire codec: msgpack values <-> component-model values as wasmtime-py 50 holds them.

Theory of operation: every conversion is driven by the component's own types
(`lattice.valtype`). `lift` validates a wire value (what a client sent, already
unpacked from msgpack or JSON) and builds exactly the Python value wasmtime-py
accepts for that type; `lower` turns a value wasmtime-py returned into the one
canonical wire form. `lower(t, lift(t, w))` is `w` in canonical form.

Wire format (full table in docs/codec.md):

    bool            bool                  (ints are not accepted)
    u8..u64, s8..s64 int                  (range-checked; bool is not an int)
    f32, f64        float                 (ints accepted on input; NaN/inf allowed;
                                           f32 is rounded to the nearest f32 on lift,
                                           finite values beyond f32 range are errors)
    char            str of one code point (not a surrogate)
    string          str                   (no lone surrogates)
    list<u8>        bin                   (input also: array of ints 0..255)
    list<T>         array
    record          map {field: value}    (unknown keys are errors; a missing field
                                           is none if its type is an option, else an error)
    tuple<...>      array of exact length
    variant         map {case: payload}   (payload nil for a payload-less case; input
                                           also accepts the bare string "case" for one)
    enum            str
    flags           array of names        (declaration order; input any order)
    option<T>       nil | wire(T)         (if T is itself an option: nil | [wire(T)])
    result<T, E>    {"ok": v} | {"err": e} (nil payload when absent; "ok"/"err" bare
                                           strings accepted on input like a variant)
    own/borrow      never carried: CodecError

Errors are `CodecError` (a ValueError) naming the path and the expected type.
This module never does I/O; `pack`/`unpack` and the JSON helpers are pure too.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable
from typing import Any

import msgpack
from wasmtime.component import Record, Variant

from lattice.valtype import (
    INT_RANGES,
    EnumT,
    FlagsT,
    FuncSig,
    ListT,
    OptionT,
    Prim,
    RecordT,
    ResourceT,
    ResultT,
    TupleT,
    ValT,
    VariantLike,
    VariantT,
    case_of_untagged,
    render,
    wasmtime_pick,
)

__all__ = [
    "CodecError",
    "UnsupportedValue",
    "from_json",
    "lift",
    "lift_args",
    "lower",
    "lower_result",
    "pack",
    "to_json_compatible",
    "unpack",
]

_REPR_MAX = 60


class CodecError(ValueError):
    """A value that does not fit its type.

    `path` locates it ("argument p.tags[2]"), `expected` is the rendered type at
    that spot, `problem` the bare complaint. str() gives the full message, e.g.
    "argument 'p': field 'age': expected u8 (0..255), got 300".
    """

    def __init__(self, problem: str, expected: str = "", path: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected
        self.path = path
        self._segments: list[tuple[str, str]] = []  # innermost last: (path part, message part)
        self._finished = False

    def _push(self, path_part: str, message_part: str) -> None:
        """Record one enclosing level while the error unwinds (paths cost nothing on success)."""
        self._segments.insert(0, (path_part, message_part))

    def _finish(self, root_path: str, root_message: str) -> CodecError:
        if not self._finished:
            self._finished = True
            self.path = root_path + "".join(p for p, _ in self._segments)
            where = ": ".join([root_message, *(m for _, m in self._segments)])
            self.args = (f"{where}: {self.problem}",)
        return self


class UnsupportedValue(CodecError):
    """A well-formed value the lattice cannot carry: a resource handle, or a case that
    wasmtime-py 50 cannot pass to a component (see docs/codec.md, "wasmtime-py quirks")."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _describe(t: ValT) -> str:
    """The expected type as shown in messages: render(t) plus the rule that was broken."""
    if isinstance(t, Prim):
        if t.kind in INT_RANGES:
            lo, hi = INT_RANGES[t.kind]
            return f"{t.kind} ({lo}..{hi})"
        if t.kind == "char":
            return "char (one Unicode scalar value)"
    if isinstance(t, ListT) and t.elem == Prim("u8"):
        return "list<u8> (bytes, or an array of ints 0..255)"
    if isinstance(t, TupleT):
        return f"{render(t)} (array of {len(t.elems)})"
    if isinstance(t, OptionT) and isinstance(t.inner, OptionT):
        return f"{render(t)} (nil, or a 1-element array for some)"
    if isinstance(t, (VariantT, ResultT)):
        return f"{render(t)} (a map {{case: payload}})"
    return render(t)


def _bad(t: ValT, got: Any, why: str = "") -> CodecError:
    return CodecError(f"expected {_describe(t)}, got {_short(got)}{why}", render(t))


def _unsupported(t: ValT) -> UnsupportedValue:
    return UnsupportedValue(
        f"{render(t)}: resources cannot cross the lattice (not supported in this version)",
        render(t),
    )


# ---------------------------------------------------------------- lift: wire -> wasmtime


def _lift_bool(t: Prim, w: Any) -> Any:
    if not isinstance(w, bool):
        raise _bad(t, w)
    return w


def _lift_int(t: Prim, w: Any) -> Any:
    if isinstance(w, bool) or not isinstance(w, int):
        raise _bad(t, w)
    lo, hi = INT_RANGES[t.kind]
    if not lo <= w <= hi:
        raise _bad(t, w)
    return int(w)


def _lift_f64(t: Prim, w: Any) -> Any:
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise _bad(t, w)
    try:
        return float(w)
    except OverflowError:
        raise _bad(t, w, " (out of range)") from None


_F32 = struct.Struct("<f")


def _lift_f32(t: Prim, w: Any) -> Any:
    x = _lift_f64(t, w)
    try:  # round to the nearest f32 now, as the component would see it
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        raise _bad(t, w, " (out of f32 range)") from None


def _lift_char(t: Prim, w: Any) -> Any:
    if not isinstance(w, str) or len(w) != 1 or 0xD800 <= ord(w) <= 0xDFFF:
        raise _bad(t, w)
    return w


def _lift_string(t: Prim, w: Any) -> Any:
    if not isinstance(w, str):
        raise _bad(t, w)
    if not w.isascii():
        try:
            w.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(t, w, " (contains a lone surrogate)") from None
    return w


_PRIM_LIFT: dict[str, Callable[[Prim, Any], Any]] = {
    "bool": _lift_bool,
    **{k: _lift_int for k in INT_RANGES},
    "f32": _lift_f32,
    "f64": _lift_f64,
    "char": _lift_char,
    "string": _lift_string,
}


def _lift_prim(t: Prim, w: Any) -> Any:
    return _PRIM_LIFT[t.kind](t, w)


def _byte_list(t: ValT, w: list[Any] | tuple[Any, ...]) -> bytes:
    for i, b in enumerate(w):
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 255:
            err = CodecError(f"expected u8 (0..255), got {_short(b)}", "u8")
            err._push(f"[{i}]", f"element {i}")
            raise err
    return bytes(w)


def _lift_list(t: ListT, w: Any) -> Any:
    if t.elem == Prim("u8"):
        if isinstance(w, (bytes, bytearray, memoryview)):
            return bytes(w)
        if isinstance(w, (list, tuple)):
            return _byte_list(t, w)
        raise _bad(t, w)
    if not isinstance(w, (list, tuple)):
        raise _bad(t, w)
    elem, out = t.elem, []
    for i, x in enumerate(w):
        try:
            out.append(_lift(elem, x))
        except CodecError as err:
            err._push(f"[{i}]", f"element {i}")
            raise
    return out


def _lift_record(t: RecordT, w: Any) -> Any:
    if not isinstance(w, dict):
        raise _bad(t, w)
    unknown = [k for k in w if k not in t.names]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise CodecError(f"unknown field(s) {names} for {render(t)}", render(t))
    rec = Record()
    name = ""
    try:
        for name, ft in t.fields:
            if name in w:
                value = _lift(ft, w[name])
            elif isinstance(ft, OptionT):
                value = _lift(ft, None)
            else:
                raise CodecError(f"missing, expected {_describe(ft)}", render(ft))
            setattr(rec, name, value)
    except CodecError as err:
        err._push(f".{name}", f"field '{name}'")
        raise
    return rec


def _lift_tuple(t: TupleT, w: Any) -> Any:
    if not isinstance(w, (list, tuple)) or len(w) != len(t.elems):
        raise _bad(t, w)
    out = []
    for i, (et, x) in enumerate(zip(t.elems, w, strict=True)):
        try:
            out.append(_lift(et, x))
        except CodecError as err:
            err._push(f"[{i}]", f"element {i}")
            raise
    return tuple(out)


def _finish_case(t: VariantLike, i: int, payload: Any) -> Any:
    """Build wasmtime's value for case `i`: Variant when tagged, else the bare payload."""
    name = t.info.cases[i][0]
    if t.info.tagged:
        return Variant(name, payload)
    if wasmtime_pick(t, payload) != i:
        raise UnsupportedValue(
            f"case '{name}' of {render(t)} cannot be passed through wasmtime-py 50: "
            "untagged, it is indistinguishable from an earlier case",
            render(t),
        )
    return payload


def _lift_variant(t: VariantT | ResultT, w: Any) -> Any:
    if isinstance(w, str):
        name, pw, bare = w, None, True
    elif isinstance(w, dict) and len(w) == 1:
        ((name, pw),) = w.items()
        bare = False
    else:
        raise _bad(t, w)
    i = t.info.index.get(name) if isinstance(name, str) else None
    if i is None:
        raise CodecError(f"unknown case {_short(name)} for {render(t)}", render(t))
    ptype = t.info.cases[i][1]
    if ptype is None:
        if pw is not None:
            raise CodecError(f"case '{name}' has no payload, got {_short(pw)}", render(t))
        return _finish_case(t, i, None)
    if bare:
        raise CodecError(f"case '{name}' needs a payload: {{{name!r}: {render(ptype)}}}", render(t))
    try:
        payload = _lift(ptype, pw)
    except CodecError as err:
        err._push(f".{name}", f"case '{name}'")
        raise
    return _finish_case(t, i, payload)


def _lift_option(t: OptionT, w: Any) -> Any:
    if w is None:
        return Variant("none") if t.info.tagged else None
    if isinstance(t.inner, OptionT):  # some(x) of a nil-able payload travels as [x]
        if not isinstance(w, (list, tuple)) or len(w) != 1:
            raise _bad(t, w)
        w = w[0]
    payload = _lift(t.inner, w)
    return Variant("some", payload) if t.info.tagged else payload


def _lift_enum(t: EnumT, w: Any) -> Any:
    if not isinstance(w, str):
        raise _bad(t, w)
    if w not in t.names:
        raise CodecError(f"unknown case {_short(w)} for {render(t)}", render(t))
    return w


def _lift_flags(t: FlagsT, w: Any) -> Any:
    if not isinstance(w, (list, tuple)):
        raise _bad(t, w, " (an array of flag names)")
    unknown = [f for f in w if f not in t.names]
    if unknown:
        names = ", ".join(_short(f) for f in unknown)
        raise CodecError(f"unknown flag(s) {names} for {render(t)}", render(t))
    return set(w)


def _lift_resource(t: ResourceT, w: Any) -> Any:
    raise _unsupported(t)


_LIFT: dict[type, Callable[[Any, Any], Any]] = {
    Prim: _lift_prim,
    ListT: _lift_list,
    RecordT: _lift_record,
    TupleT: _lift_tuple,
    VariantT: _lift_variant,
    ResultT: _lift_variant,
    OptionT: _lift_option,
    EnumT: _lift_enum,
    FlagsT: _lift_flags,
    ResourceT: _lift_resource,
}


def _lift(t: ValT, w: Any) -> Any:
    return _LIFT[type(t)](t, w)


def lift(t: ValT, wire: Any, path: str = "value") -> Any:
    """Validate wire value `wire` against `t` and build the Python value wasmtime-py expects.

    Records become `wasmtime.component.Record` (attributes named as in WIT, e.g.
    "first-name"), tagged variant-likes `Variant(tag, payload)`, flags a `set`,
    list<u8> `bytes`, tuples `tuple`. Raises CodecError with `path` as its root.
    """
    try:
        return _lift(t, wire)
    except CodecError as err:
        raise err._finish(path, path) from None


# ---------------------------------------------------------------- lower: wasmtime -> wire


def _lower_prim(t: Prim, v: Any) -> Any:
    kind = t.kind
    if kind in INT_RANGES:
        return _lift_int(t, v)
    if kind in ("f32", "f64"):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(t, v)
        return float(v)
    if kind == "string":  # wasmtime only hands out valid strings: skip the surrogate scan
        if not isinstance(v, str):
            raise _bad(t, v)
        return v
    return _PRIM_LIFT[kind](t, v)  # bool, char: same checks both ways


def _lower_list(t: ListT, v: Any) -> Any:
    if t.elem == Prim("u8"):
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v)
        if isinstance(v, (list, tuple)):
            return _byte_list(t, v)
        raise _bad(t, v)
    if not isinstance(v, (list, tuple)):
        raise _bad(t, v)
    elem, out = t.elem, []
    for i, x in enumerate(v):
        try:
            out.append(_lower(elem, x))
        except CodecError as err:
            err._push(f"[{i}]", f"element {i}")
            raise
    return out


_MISSING = object()


def _lower_record(t: RecordT, v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str, bytes, list, tuple, set, dict)):
        raise _bad(t, v)
    out, name = {}, ""
    try:
        for name, ft in t.fields:
            x = getattr(v, name, _MISSING)
            if x is _MISSING:
                raise CodecError(f"missing, expected {_describe(ft)}", render(ft))
            out[name] = _lower(ft, x)
    except CodecError as err:
        err._push(f".{name}", f"field '{name}'")
        raise
    return out


def _lower_tuple(t: TupleT, v: Any) -> Any:
    if not isinstance(v, (list, tuple)) or len(v) != len(t.elems):
        raise _bad(t, v)
    out = []
    for i, (et, x) in enumerate(zip(t.elems, v, strict=True)):
        try:
            out.append(_lower(et, x))
        except CodecError as err:
            err._push(f"[{i}]", f"element {i}")
            raise
    return out


def _split_case(t: VariantLike, v: Any) -> tuple[int, Any]:
    """Which case `v` is and its payload, for both tagged and untagged representations."""
    if t.info.tagged:
        if not isinstance(v, Variant):
            raise _bad(t, v, " (a wasmtime Variant)")
        i = t.info.index.get(v.tag) if isinstance(v.tag, str) else None
        if i is None:
            raise CodecError(f"unknown case {_short(v.tag)} for {render(t)}", render(t))
        if t.info.cases[i][1] is None and v.payload is not None:
            raise CodecError(f"case '{v.tag}' has no payload, got {_short(v.payload)}", render(t))
        return i, v.payload
    i = case_of_untagged(t, v)
    if i is None:
        raise _bad(t, v)
    return i, v


def _lower_variant(t: VariantT | ResultT, v: Any) -> Any:
    i, payload = _split_case(t, v)
    name, ptype = t.info.cases[i]
    if ptype is None:
        return {name: None}
    try:
        return {name: _lower(ptype, payload)}
    except CodecError as err:
        err._push(f".{name}", f"case '{name}'")
        raise


def _lower_option(t: OptionT, v: Any) -> Any:
    i, payload = _split_case(t, v)
    if i == 0:
        return None
    inner = _lower(t.inner, payload)
    return [inner] if isinstance(t.inner, OptionT) else inner


def _lower_enum(t: EnumT, v: Any) -> Any:
    return _lift_enum(t, v)


def _lower_flags(t: FlagsT, v: Any) -> Any:
    if not isinstance(v, (set, frozenset, list, tuple)):
        raise _bad(t, v, " (a set of flag names)")
    present = set(_lift_flags(t, list(v)))
    return [n for n in t.names if n in present]


def _lower_resource(t: ResourceT, v: Any) -> Any:
    raise _unsupported(t)


_LOWER: dict[type, Callable[[Any, Any], Any]] = {
    Prim: _lower_prim,
    ListT: _lower_list,
    RecordT: _lower_record,
    TupleT: _lower_tuple,
    VariantT: _lower_variant,
    ResultT: _lower_variant,
    OptionT: _lower_option,
    EnumT: _lower_enum,
    FlagsT: _lower_flags,
    ResourceT: _lower_resource,
}


def _lower(t: ValT, v: Any) -> Any:
    return _LOWER[type(t)](t, v)


def lower(t: ValT, pyval: Any, path: str = "value") -> Any:
    """Turn a value wasmtime-py produced for `t` into its canonical wire form.

    Untagged variant-likes are resolved by the exact class of the value (None
    means the payload-less case), which is unambiguous because wasmtime only
    leaves a type untagged when its cases' classes are disjoint.
    """
    try:
        return _lower(t, pyval)
    except CodecError as err:
        raise err._finish(path, path) from None


# ---------------------------------------------------------------- calls


def lift_args(sig: FuncSig, wire_args: Any) -> list[Any]:
    """Lift call arguments given as an array (positional) or a map by parameter name.

    nil means no arguments. A map may omit option-typed parameters (they become none).
    """
    params = sig.params
    if wire_args is None:
        wire_args = []
    if isinstance(wire_args, dict):
        known = {n for n, _ in params}
        unknown = [k for k in wire_args if k not in known]
        if unknown:
            names = ", ".join(_short(k) for k in unknown)
            raise CodecError(
                f"unknown argument(s) {names} for {sig.render_sig()}", sig.render_sig()
            )._finish("arguments", "arguments")
        ordered = []
        for name, t in params:
            if name in wire_args:
                ordered.append(wire_args[name])
            elif isinstance(t, OptionT):
                ordered.append(None)
            else:
                raise CodecError(
                    f"missing, expected {_describe(t)} for {sig.render_sig()}", render(t)
                )._finish(f"argument {name}", f"argument '{name}'")
    elif isinstance(wire_args, (list, tuple)):
        if len(wire_args) != len(params):
            raise CodecError(
                f"expected {len(params)} argument(s) for {sig.render_sig()}, got {len(wire_args)}",
                sig.render_sig(),
            )._finish("arguments", "arguments")
        ordered = list(wire_args)
    else:
        raise CodecError(
            f"expected an array or a map of arguments for {sig.render_sig()}, "
            f"got {_short(wire_args)}",
            sig.render_sig(),
        )._finish("arguments", "arguments")
    out = []
    for (name, t), w in zip(params, ordered, strict=True):
        try:
            out.append(_lift(t, w))
        except CodecError as err:
            raise err._finish(f"argument {name}", f"argument '{name}'") from None
    return out


def lower_result(sig: FuncSig, value: Any) -> Any:
    """Lower a call's return value; nil when the function has no result."""
    if sig.result is None:
        return None
    return lower(sig.result, value, path="result")


# ---------------------------------------------------------------- msgpack / JSON


def pack(obj: Any) -> bytes:
    """msgpack-encode a wire value (str as str, bytes as bin; tuples become arrays)."""
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode as msgpack: {exc}") from None
    return data


def unpack(data: bytes) -> Any:
    """Decode one msgpack value; any malformed, truncated or trailing input is a CodecError."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CodecError(f"malformed msgpack: {detail}") from None


_BYTES_KEY = "$bytes"  # cannot clash: WIT field and case names never start with "$"


def to_json_compatible(wire: Any) -> Any:
    """Make a wire value JSON-encodable: bytes become {"$bytes": "<base64>"}, tuples arrays.

    NaN/inf floats are left alone (Python's json writes them as NaN/Infinity).
    """
    if isinstance(wire, (bytes, bytearray, memoryview)):
        return {_BYTES_KEY: base64.b64encode(bytes(wire)).decode("ascii")}
    if isinstance(wire, dict):
        return {k: to_json_compatible(v) for k, v in wire.items()}
    if isinstance(wire, (list, tuple)):
        return [to_json_compatible(x) for x in wire]
    return wire


def from_json(value: Any) -> Any:
    """Inverse of to_json_compatible: {"$bytes": "<base64>"} anywhere becomes bytes."""
    if isinstance(value, dict):
        if len(value) == 1 and _BYTES_KEY in value:
            text = value[_BYTES_KEY]
            if not isinstance(text, str):
                raise CodecError(f'"$bytes" must be a base64 string, got {_short(text)}')
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise CodecError(f'"$bytes" is not valid base64: {_short(text)}') from None
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_json(x) for x in value]
    return value
