"""Component-model value types, described independently of wasmtime.

Theory of operation: a component's function signatures are read once (via
`from_wasmtime` / `FuncSig.from_wasmtime`) into these small frozen, hashable
dataclasses, which the codec then walks for every call. They also carry the one
piece of wasmtime-py knowledge the codec needs: which Python classes wasmtime
uses for a type (`python_classes`, mirroring `ValType.add_classes`) and hence
whether a variant/option/result is "tagged" (`is_tagged`, mirroring
`VariantLikeType._tagged`). Untagged variant-likes are passed as their bare
payload, so which case a value belongs to must be inferred from its class.

This module never performs I/O and never imports wasmtime at module level:
only `from_wasmtime`/`FuncSig.from_wasmtime` and the class lookups import it
(lazily), so rendering and building types stays dependency-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

INT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "s8": (-(2**7), 2**7 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1),
}
PRIM_KINDS: tuple[str, ...] = ("bool", *INT_RANGES, "f32", "f64", "char", "string")

# Class "tokens" stand in for the Python classes wasmtime-py uses, so tagging can
# be computed when a type is built without importing wasmtime. "object" is what
# wasmtime adds for a payload-less case (it matches anything, including None).
_PRIM_TOKENS: dict[str, frozenset[str]] = {
    "bool": frozenset({"bool"}),
    **{k: frozenset({"int"}) for k in INT_RANGES},
    "f32": frozenset({"float"}),
    "f64": frozenset({"float"}),
    "char": frozenset({"str"}),
    "string": frozenset({"str"}),
}
_OBJECT = frozenset({"object"})


def _check_unique(what: str, names: tuple[str, ...]) -> None:
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate {what} names in {names!r}")


@dataclass(frozen=True, slots=True)
class Prim:
    """A primitive: bool, u8..u64, s8..s64, f32, f64, char or string."""

    kind: str

    def __post_init__(self) -> None:
        if self.kind not in _PRIM_TOKENS:
            raise ValueError(f"unknown primitive type {self.kind!r}")


@dataclass(frozen=True, slots=True)
class ListT:
    elem: ValT


@dataclass(frozen=True, slots=True)
class RecordT:
    fields: tuple[tuple[str, ValT], ...]
    names: frozenset[str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        fields = tuple((n, t) for n, t in self.fields)
        object.__setattr__(self, "fields", fields)
        _check_unique("field", tuple(n for n, _ in fields))
        object.__setattr__(self, "names", frozenset(n for n, _ in fields))


@dataclass(frozen=True, slots=True)
class TupleT:
    elems: tuple[ValT, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "elems", tuple(self.elems))


@dataclass(frozen=True, slots=True)
class EnumT:
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        _check_unique("enum case", self.names)


@dataclass(frozen=True, slots=True)
class FlagsT:
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        _check_unique("flag", self.names)


@dataclass(frozen=True, slots=True)
class ResourceT:
    kind: Literal["own", "borrow"]
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("own", "borrow"):
            raise ValueError(f"resource kind must be 'own' or 'borrow', not {self.kind!r}")


@dataclass(frozen=True, slots=True)
class CaseInfo:
    """What the codec needs per variant-like, computed once when the type is built.

    `cases` lists (name, payload-or-None) in wasmtime's order (option: none, some;
    result: ok, err); `index` maps a case name to its position; `tagged` mirrors
    wasmtime-py's `_tagged()`; `tokens` mirrors `add_classes` for the whole type and
    `case_tokens` for each case (a payload-less case is {"object"}).
    """

    cases: tuple[tuple[str, ValT | None], ...]
    index: dict[str, int]
    tagged: bool
    tokens: frozenset[str]
    case_tokens: tuple[frozenset[str], ...]

    @classmethod
    def of(cls, cases: tuple[tuple[str, ValT | None], ...]) -> CaseInfo:
        case_tokens = tuple(_OBJECT if p is None else _tokens(p) for _, p in cases)
        seen: set[str] = set()
        tagged = False
        for toks in case_tokens:  # the same overlap walk as VariantLikeType._tagged
            if seen & toks:
                tagged = True
                break
            seen |= toks
        tokens = frozenset({"Variant"}) if tagged else frozenset().union(*case_tokens)
        index = {n: i for i, (n, _) in enumerate(cases)}
        return cls(cases, index, tagged, tokens, case_tokens)


@dataclass(frozen=True, slots=True)
class VariantT:
    cases: tuple[tuple[str, ValT | None], ...]
    info: CaseInfo = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple((n, p) for n, p in self.cases))
        _check_unique("variant case", tuple(n for n, _ in self.cases))
        object.__setattr__(self, "info", CaseInfo.of(self.cases))


@dataclass(frozen=True, slots=True)
class OptionT:
    inner: ValT
    info: CaseInfo = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", CaseInfo.of((("none", None), ("some", self.inner))))


@dataclass(frozen=True, slots=True)
class ResultT:
    ok: ValT | None = None
    err: ValT | None = None
    info: CaseInfo = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", CaseInfo.of((("ok", self.ok), ("err", self.err))))


ValT = Prim | ListT | RecordT | TupleT | VariantT | EnumT | FlagsT | OptionT | ResultT | ResourceT
VariantLike = VariantT | OptionT | ResultT

_U8 = Prim("u8")


def _tokens(t: ValT) -> frozenset[str]:
    """Class tokens of `t`: the set wasmtime-py's `add_classes` would produce."""
    if isinstance(t, Prim):
        return _PRIM_TOKENS[t.kind]
    if isinstance(t, (VariantT, OptionT, ResultT)):
        return t.info.tokens
    if isinstance(t, ListT):
        return frozenset({"bytes" if t.elem == _U8 else "list"})
    if isinstance(t, RecordT):
        return frozenset({"Record"})
    if isinstance(t, TupleT):
        return frozenset({"tuple"})
    if isinstance(t, EnumT):
        return frozenset({"str"})
    if isinstance(t, FlagsT):
        return frozenset({"set"})
    if isinstance(t, ResourceT):
        return frozenset({"ResourceAny", "ResourceHost"})
    raise TypeError(f"not a ValT: {t!r}")


@cache
def _token_classes() -> dict[str, type]:
    from wasmtime.component import Record, ResourceAny, ResourceHost, Variant

    return {
        "bool": bool,
        "int": int,
        "float": float,
        "str": str,
        "bytes": bytes,
        "list": list,
        "tuple": tuple,
        "set": set,
        "object": object,
        "Record": Record,
        "Variant": Variant,
        "ResourceAny": ResourceAny,
        "ResourceHost": ResourceHost,
    }


@cache
def _class_tokens() -> dict[type, str]:
    out = {cls: tok for tok, cls in _token_classes().items() if tok != "object"}
    out[type(None)] = "object"  # a payload-less case comes back from wasmtime as None
    return out


def python_classes(t: ValT) -> frozenset[type]:
    """The Python classes wasmtime-py uses for values of `t` (mirrors `add_classes`)."""
    classes = _token_classes()
    return frozenset(classes[tok] for tok in _tokens(t))


def is_tagged(t: ValT) -> bool:
    """Whether wasmtime-py wraps values of variant-like `t` in `Variant(tag, payload)`.

    Mirrors `VariantLikeType._tagged`: tagged iff two cases share a Python class
    (a payload-less case counts as `object`). Non-variant-likes are never tagged.
    """
    return isinstance(t, (VariantT, OptionT, ResultT)) and t.info.tagged


def case_of_untagged(t: VariantLike, value: Any) -> int | None:
    """Index of the case of untagged `t` that wasmtime-py lifted `value` from.

    Case class sets are pairwise disjoint (that is what "untagged" means), so the
    exact class of `value` names one case; None belongs to the case containing
    `object` (a payload-less case, or a payload that is itself an untagged
    variant-like with one). Exact classes keep `True` out of an `int` case.
    """
    tok = _class_tokens().get(type(value))
    if tok is None:
        return None
    for i, toks in enumerate(t.info.case_tokens):
        if tok in toks:
            return i
    return None


@cache
def _isinstance_args(case_tokens: tuple[frozenset[str], ...]) -> tuple[tuple[type, ...], ...]:
    classes = _token_classes()
    return tuple(tuple(classes[tok] for tok in sorted(toks)) for toks in case_tokens)


def wasmtime_pick(t: VariantLike, value: Any) -> int | None:
    """The case wasmtime-py's `_lower` would choose for untagged `value` (first match wins).

    It uses isinstance() in case order, so a case whose classes include `object`
    swallows every later case, and an int case swallows a later bool case.
    """
    info = t.info
    per_case = _isinstance_args(info.case_tokens)
    for i, ((_, payload), classes) in enumerate(zip(info.cases, per_case, strict=True)):
        if payload is None:
            if value is None:
                return i
        elif isinstance(value, classes):
            return i
    return None


# ---------------------------------------------------------------- rendering

RENDER_LIMIT = 120


def _join(opening: str, items: list[str], closing: str, limit: int) -> str:
    if not items:
        return opening.rstrip() + closing.lstrip()
    text = opening + ", ".join(items) + closing
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for item in items:
        if kept and len(opening) + len(", ".join([*kept, item, "…"])) + len(closing) > limit:
            break
        kept.append(item)
    return opening + ", ".join([*kept, "…"]) + closing


def render(t: ValT | None, limit: int = RENDER_LIMIT) -> str:
    """WIT-like text for `t`, for error messages; long member lists end in "…"."""
    if t is None:
        return "_"
    if isinstance(t, Prim):
        return t.kind
    if isinstance(t, ListT):
        return f"list<{render(t.elem, limit)}>"
    if isinstance(t, OptionT):
        return f"option<{render(t.inner, limit)}>"
    if isinstance(t, ResultT):
        if t.ok is None and t.err is None:
            return "result"
        if t.err is None:
            return f"result<{render(t.ok, limit)}>"
        return f"result<{render(t.ok, limit)}, {render(t.err, limit)}>"
    if isinstance(t, TupleT):
        return _join("tuple<", [render(e, limit) for e in t.elems], ">", limit)
    if isinstance(t, RecordT):
        items = [f"{n}: {render(ft, limit)}" for n, ft in t.fields]
        return _join("record { ", items, " }", limit)
    if isinstance(t, VariantT):
        items = [n if p is None else f"{n}({render(p, limit)})" for n, p in t.cases]
        return _join("variant { ", items, " }", limit)
    if isinstance(t, EnumT):
        return _join("enum { ", list(t.names), " }", limit)
    if isinstance(t, FlagsT):
        return _join("flags { ", list(t.names), " }", limit)
    if isinstance(t, ResourceT):
        return f"{t.kind}<{t.name or 'resource'}>"
    raise TypeError(f"not a ValT: {t!r}")


# ---------------------------------------------------------------- wasmtime

_WT_PRIMS = {
    "Bool": "bool",
    "U8": "u8",
    "U16": "u16",
    "U32": "u32",
    "U64": "u64",
    "S8": "s8",
    "S16": "s16",
    "S32": "s32",
    "S64": "s64",
    "F32": "f32",
    "F64": "f64",
    "Char": "char",
    "String": "string",
}


def from_wasmtime(vt: Any) -> ValT:
    """Convert a `wasmtime.component` ValType; ValueError for kinds the lattice lacks
    (future, stream, error-context)."""
    from wasmtime import component as wc

    for cls_name, kind in _WT_PRIMS.items():
        if isinstance(vt, getattr(wc, cls_name)):
            return Prim(kind)
    if isinstance(vt, wc.ListType):
        return ListT(from_wasmtime(vt.element))
    if isinstance(vt, wc.RecordType):
        return RecordT(tuple((n, from_wasmtime(ft)) for n, ft in vt.fields))
    if isinstance(vt, wc.TupleType):
        return TupleT(tuple(from_wasmtime(e) for e in vt.elements))
    if isinstance(vt, wc.VariantType):
        return VariantT(tuple((n, None if p is None else from_wasmtime(p)) for n, p in vt.cases))
    if isinstance(vt, wc.EnumType):
        return EnumT(tuple(vt.names))
    if isinstance(vt, wc.FlagsType):
        return FlagsT(tuple(vt.names))
    if isinstance(vt, wc.OptionType):
        return OptionT(from_wasmtime(vt.payload))
    if isinstance(vt, wc.ResultType):
        ok, err = vt.ok, vt.err
        return ResultT(
            None if ok is None else from_wasmtime(ok), None if err is None else from_wasmtime(err)
        )
    if isinstance(vt, wc.OwnType):
        return ResourceT("own")  # wasmtime-py's ResourceType carries no name
    if isinstance(vt, wc.BorrowType):
        return ResourceT("borrow")
    raise ValueError(f"unsupported component value type: {type(vt).__name__}")


@dataclass(frozen=True, slots=True)
class FuncSig:
    """A component function's parameters (in order, by name) and optional result."""

    params: tuple[tuple[str, ValT], ...]
    result: ValT | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple((n, t) for n, t in self.params))

    @classmethod
    def from_wasmtime(cls, functype: Any) -> FuncSig:
        """Read a `wasmtime.component.FuncType` (its `.params` and `.result`)."""
        result = functype.result
        return cls(
            tuple((n, from_wasmtime(t)) for n, t in functype.params),
            None if result is None else from_wasmtime(result),
        )

    def render_sig(self) -> str:
        """WIT-like text, e.g. "func(msg: string) -> string"."""
        params = ", ".join(f"{n}: {render(t)}" for n, t in self.params)
        tail = "" if self.result is None else f" -> {render(self.result)}"
        return f"func({params}){tail}"
