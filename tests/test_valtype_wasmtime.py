"""lattice.valtype and lattice.codec against real wasmtime-py 50 types and converters.

No componentize-py: components are written as component-model WAT here.
* An import-only component gives real wasmtime ValTypes for any ValT (imports need
  no implementation): checks `from_wasmtime` and `is_tagged`/`python_classes`
  against wasmtime's own `_tagged()`/`add_classes`.
* An "identity" component imports `f(x: T, pad) -> T` from the host and exports a
  lifted `f` whose core code just forwards to the lowered import. Calling the export
  runs wasmtime-py's convert_to_c on our lifted value, the real canonical ABI into
  and out of linear memory twice, and convert_from_c into the host function and
  back out: the codec's whole contract with wasmtime, without a guest toolchain.
  (`pad` is 16 u8s so parameters always travel through memory, keeping the core
  adapter signature independent of T.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wasmtime import component as wc

from lattice.codec import UnsupportedValue, lift, lower
from lattice.valtype import (
    PRIM_KINDS,
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
    VariantT,
    from_wasmtime,
    is_tagged,
    python_classes,
)
from tests.test_codec import (
    COLOR,
    NESTED,
    PERMS,
    PERSON,
    SHAPE,
    py_same,
    same,
    val_types,
    wire_pairs,
)

ENGINE = wasmtime.Engine()
U8, U32, STRING = Prim("u8"), Prim("u32"), Prim("string")
PAD = "(tuple " + " ".join(["u8"] * 16) + ")"
PAD_VALUE = tuple(range(16))


class WatTypes:
    """Component-WAT text for ValTs, in two scopes at once.

    Records, variants, enums and flags must be named (exported) types to appear in
    an imported or exported function, so each gets a definition plus an export, both
    inside the imported instance type ("inst") and at component level ("top").
    """

    def __init__(self) -> None:
        self.inst: list[str] = ['(export "res" (type $res (sub resource)))']
        self.top: list[str] = []
        self.count = 0

    def ref(self, t: ValT) -> tuple[str, str]:
        if isinstance(t, Prim):
            return t.kind, t.kind
        if isinstance(t, ResourceT):  # instance scope only (never lifted here)
            return f"({t.kind} $res)", ""
        if isinstance(t, ListT):
            return self._wrap("list", [t.elem])
        if isinstance(t, OptionT):
            return self._wrap("option", [t.inner])
        if isinstance(t, TupleT):
            return self._wrap("tuple", list(t.elems))
        if isinstance(t, ResultT):
            ok = self.ref(t.ok) if t.ok is not None else None
            err = self.ref(t.err) if t.err is not None else None

            def result(i: int) -> str:
                ok_part = f" {ok[i]}" if ok else ""
                return f"(result{ok_part}" + (f" (error {err[i]}))" if err else ")")

            return result(0), result(1)
        if isinstance(t, RecordT):
            parts = [(n, self.ref(ft)) for n, ft in t.fields]
            body = [
                "(record " + " ".join(f'(field "{n}" {r[i]})' for n, r in parts) + ")"
                for i in (0, 1)
            ]
        elif isinstance(t, VariantT):
            cases = [(n, None if p is None else self.ref(p)) for n, p in t.cases]
            body = [
                "(variant "
                + " ".join(f'(case "{n}"' + (f" {r[i]})" if r else ")") for n, r in cases)
                + ")"
                for i in (0, 1)
            ]
        elif isinstance(t, EnumT):
            body = ["(enum " + " ".join(f'"{n}"' for n in t.names) + ")"] * 2
        elif isinstance(t, FlagsT):
            body = ["(flags " + " ".join(f'"{n}"' for n in t.names) + ")"] * 2
        else:
            raise AssertionError(t)
        k = self.count
        self.count += 1
        self.inst.append(f'(type $d{k} {body[0]}) (export "t{k}" (type $i{k} (eq $d{k})))')
        self.top.append(f'(type $d{k} {body[1]}) (export $e{k} "t{k}" (type $d{k}))')
        return f"$i{k}", f"$e{k}"

    def _wrap(self, head: str, elems: list[ValT]) -> tuple[str, str]:
        refs = [self.ref(e) for e in elems]
        inst, top = (f"({head} " + " ".join(r[i] for r in refs) + ")" for i in (0, 1))
        return inst, top


def import_only_component(funcs: dict[str, FuncSig]) -> wc.Component:
    """A component that only imports instance "t:t/i" with `funcs`: real types, no code."""
    wat = WatTypes()
    lines = []
    for name, sig in funcs.items():
        params = " ".join(f'(param "{n}" {wat.ref(t)[0]})' for n, t in sig.params)
        result = "" if sig.result is None else f" (result {wat.ref(sig.result)[0]})"
        lines.append(f'(export "{name}" (func {params}{result}))')
    text = '(component (import "t:t/i" (instance ' + " ".join(wat.inst + lines) + ")))"
    return wc.Component(ENGINE, text)


def imported_funcs(funcs: dict[str, FuncSig]) -> dict[str, wc.FuncType]:
    component = import_only_component(funcs)
    (instance,) = component.type.imports(ENGINE).values()
    items = {n: e.ty for n, e in instance.ty.exports(ENGINE).items()}
    return {n: items[n] for n in funcs}


def import_types(types: list[ValT]) -> list[Any]:
    """Real wasmtime ValTypes for `types` (each as the one parameter of a function)."""
    funcs = imported_funcs({f"f{i}": FuncSig((("x", t),)) for i, t in enumerate(types)})
    return [funcs[f"f{i}"].params[0][1] for i in range(len(types))]


# ---------------------------------------------------------------- flattening, for the adapter


def _join(a: str, b: str) -> str:
    if a == b:
        return a
    return "i32" if {a, b} == {"i32", "f32"} else "i64"


def flatten(t: ValT) -> list[str]:
    """Canonical ABI core types of `t` (only the length, and the type when it is 1, matter)."""
    if isinstance(t, Prim):
        return {"u64": ["i64"], "s64": ["i64"], "f32": ["f32"], "f64": ["f64"]}.get(
            t.kind, ["i32", "i32"] if t.kind == "string" else ["i32"]
        )
    if isinstance(t, ListT):
        return ["i32", "i32"]
    if isinstance(t, RecordT):
        return [c for _, ft in t.fields for c in flatten(ft)]
    if isinstance(t, TupleT):
        return [c for e in t.elems for c in flatten(e)]
    if isinstance(t, (EnumT, FlagsT, ResourceT)):
        return ["i32"]
    assert isinstance(t, (VariantT, OptionT, ResultT))
    joined: list[str] = []
    for _, payload in t.info.cases:
        for i, c in enumerate(flatten(payload) if payload is not None else []):
            joined[i : i + 1] = [_join(joined[i], c) if i < len(joined) else c]
    return ["i32", *joined]


# ---------------------------------------------------------------- the identity component

_MEMORY_MODULE = """
(core module $mem
  (memory (export "mem") 1)
  (global $bump (mut i32) (i32.const 16))
  (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16))
                                        (i32.const 1))))))
    (global.set $bump (local.get $end))
    (local.get $p)))
(core instance $m (instantiate $mem))
(alias core export $m "mem" (core memory $memory))
(alias core export $m "realloc" (core func $realloc))
"""


def identity_component_text(types: list[ValT]) -> str:
    wat = WatTypes()
    inst_funcs, top, imports, adapter, lows = [], [], [], [], []
    for k, t in enumerate(types):
        inner, outer = wat.ref(t)
        inst_funcs.append(
            f'(export "f{k}" (func (param "x" {inner}) (param "pad" {PAD}) (result {inner})))'
        )
        flat = flatten(t)
        if len(flat) == 1:  # result comes back in a register on both sides
            imp, body = f"(param i32) (result {flat[0]})", f"(call $f{k} (local.get 0))"
            sig = f"(param i32) (result {flat[0]})"
        else:  # result written to a return area we allocate
            imp = "(param i32 i32)"
            body = (
                "(local.set 1 (call $realloc (i32.const 0) (i32.const 0) (i32.const 8)"
                f" (i32.const 4096))) (call $f{k} (local.get 0) (local.get 1)) (local.get 1)"
            )
            sig = "(param i32) (result i32) (local i32)"
        imports.append(f'(import "i" "f{k}" (func $f{k} {imp}))')
        adapter.append(f'(func (export "f{k}") {sig} {body})')
        lows.append(
            f'(alias export $imp "f{k}" (func $g{k}))'
            f" (core func $low{k} (canon lower (func $g{k}) (memory $memory) (realloc $realloc)))"
        )
        top.append(
            f'(type $ft{k} (func (param "x" {outer}) (param "pad" {PAD}) (result {outer})))'
            f' (func $lift{k} (type $ft{k}) (canon lift (core func $a "f{k}")'
            f' (memory $memory) (realloc $realloc))) (export "f{k}" (func $lift{k}))'
        )
    low_exports = " ".join(f'(export "f{k}" (func $low{k}))' for k in range(len(types)))
    return "\n".join(
        [
            "(component",
            *wat.top,
            '(import "t:t/i" (instance $imp ' + " ".join(wat.inst[1:] + inst_funcs) + "))",
            _MEMORY_MODULE,
            *lows,
            "(core module $adapt",
            '(import "m" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))',
            *imports,  # core imports must precede functions
            *adapter,
            ")",
            f"(core instance $lows {low_exports})",
            '(core instance $a (instantiate $adapt (with "m" (instance $m))'
            ' (with "i" (instance $lows))))',
            *top,
            ")",
        ]
    )


class Identity:
    """Instantiated identity component; `host` decides what the imported f{k} returns."""

    def __init__(self, types: list[ValT], host: Callable[[int, Any], Any]) -> None:
        self.types = types
        self.received: list[Any] = []
        component = wc.Component(ENGINE, identity_component_text(types))
        linker = wc.Linker(ENGINE)
        with linker.root() as root, root.add_instance("t:t/i") as inst:  # unlock when done
            for k in range(len(types)):
                inst.add_func(f"f{k}", self._host_func(k, host))
        self.store = wasmtime.Store(ENGINE)
        self.instance = linker.instantiate(self.store, component)

    def _host_func(self, k: int, host: Callable[[int, Any], Any]) -> Callable[..., Any]:
        def impl(_store: Any, x: Any, pad: Any) -> Any:
            assert pad == PAD_VALUE
            self.received.append(x)
            return host(k, x)

        return impl

    def call(self, k: int, value: Any) -> Any:
        func = self.instance.get_func(self.store, f"f{k}")
        assert func is not None
        out = func(self.store, value, PAD_VALUE)
        func.post_return(self.store)
        return out


def codec_echo(types: list[ValT]) -> Callable[[int, Any], Any]:
    """A host function that answers through the codec, as a lattice provider would."""
    return lambda k, x: lift(types[k], lower(types[k], x))


# ---------------------------------------------------------------- (a) from_wasmtime

EVERY_KIND: list[ValT] = [
    *(Prim(k) for k in PRIM_KINDS),
    ListT(U8),
    ListT(ListT(STRING)),
    PERSON,
    SHAPE,
    COLOR,
    PERMS,
    NESTED,
    OptionT(PERSON),
    TupleT((STRING, U32)),
    ResultT(Prim("s32"), STRING),
    ResultT(None, STRING),
    ResultT(U8),
    ResultT(),
    VariantT((("a", None), ("b", None))),
    RecordT((("inner", RecordT((("deep", ListT(SHAPE)),))),)),
]


def test_from_wasmtime_every_kind() -> None:
    types = [*EVERY_KIND, ResourceT("own"), ResourceT("borrow")]
    assert [from_wasmtime(vt) for vt in import_types(types)] == types


def test_funcsig_from_wasmtime() -> None:
    sigs = {
        "greet": FuncSig((("p", PERSON),), STRING),
        "divide": FuncSig((("a", Prim("s32")), ("b", Prim("s32"))), ResultT(Prim("s32"), STRING)),
        "nothing": FuncSig(()),
        "nested": FuncSig((("o", NESTED),), NESTED),
    }
    funcs = imported_funcs(sigs)
    for name, sig in sigs.items():
        assert FuncSig.from_wasmtime(funcs[name]) == sig
    assert FuncSig.from_wasmtime(funcs["divide"]).render_sig() == (
        "func(a: s32, b: s32) -> result<s32, string>"
    )


def test_from_wasmtime_rejects_non_value_types() -> None:
    with pytest.raises(ValueError, match="unsupported component value type"):
        from_wasmtime(wc.ErrorContext())


# ---------------------------------------------------------------- (b) tagging vs wasmtime


def _pairs(t: ValT, vt: Any) -> Iterator[tuple[ValT, Any]]:
    """Walk our type and wasmtime's in lockstep."""
    yield t, vt
    if isinstance(t, ListT):
        yield from _pairs(t.elem, vt.element)
    elif isinstance(t, RecordT):
        for (_, ft), (_, fvt) in zip(t.fields, vt.fields, strict=True):
            yield from _pairs(ft, fvt)
    elif isinstance(t, TupleT):
        for et, evt in zip(t.elems, vt.elements, strict=True):
            yield from _pairs(et, evt)
    elif isinstance(t, (VariantT, OptionT, ResultT)):
        wt_cases = vt.cases if isinstance(t, VariantT) else vt._cases()
        for (_, p), (_, pvt) in zip(t.info.cases, wt_cases, strict=True):
            if p is not None:
                yield from _pairs(p, pvt)


def _check_against_wasmtime(t: ValT, vt: Any) -> int:
    checked = 0
    for sub, subvt in _pairs(t, vt):
        classes: set[type] = set()
        subvt.add_classes(classes)
        assert python_classes(sub) == classes, sub
        if isinstance(sub, (VariantT, OptionT, ResultT)):
            assert is_tagged(sub) == subvt._tagged(), sub
            checked += 1
    return checked


def test_is_tagged_matches_wasmtime_on_examples() -> None:
    examples: list[ValT] = [
        *EVERY_KIND,
        OptionT(NESTED),
        OptionT(ResultT(None, STRING)),
        ResultT(OptionT(U32), STRING),
        VariantT((("a", U32), ("b", Prim("bool")))),
        VariantT((("s", STRING), ("e", COLOR))),
        VariantT((("l", ListT(U8)), ("m", ListT(U32)), ("n", None))),
        VariantT((("o", OptionT(U32)), ("n", None))),
        ResultT(PERMS, TupleT((U8,))),
    ]
    vts = import_types(examples)
    assert sum(_check_against_wasmtime(t, vt) for t, vt in zip(examples, vts, strict=True)) > 20


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(val_types, min_size=1, max_size=4))
def test_is_tagged_matches_wasmtime_on_random_types(types: list[ValT]) -> None:
    for t, vt in zip(types, import_types(types), strict=True):
        assert from_wasmtime(vt) == t
        _check_against_wasmtime(t, vt)


# ---------------------------------------------------------------- (c) through wasmtime's converters

ROUND_TRIPS: list[tuple[ValT, list[Any]]] = [
    (Prim("bool"), [True, False]),
    (Prim("s8"), [-128, 127]),
    (Prim("u64"), [0, 2**64 - 1]),
    (Prim("s64"), [-(2**63)]),
    (Prim("f32"), [0.1, float("inf"), float("nan"), 3]),
    (Prim("f64"), [-0.0, 1e300, float("nan")]),
    (Prim("char"), ["x", "😀"]),
    (STRING, ["", "héllo wörld"]),
    (ListT(U8), [b"", b"\x00\xff", [1, 2, 3]]),
    (ListT(STRING), [[], ["a", "b"]]),
    (PERSON, [{"first-name": "Ada", "age": 36, "email": "a@b", "tags": ["x"]}]),
    (SHAPE, [{"circle": 1.5}, {"rectangle": {"x": -1, "y": 2}}, "empty"]),
    (COLOR, ["red", "blue"]),
    (PERMS, [[], ["exec", "read"], ["read", "write", "exec"]]),
    (NESTED, [None, [None], [7]]),
    (OptionT(NESTED), [None, [None], [[None]], [[9]]]),
    (OptionT(PERSON), [None, {"first-name": "B", "age": 1, "tags": []}]),
    (TupleT((STRING, U32)), [["a", 1]]),
    (ResultT(Prim("s32"), STRING), [{"ok": -5}, {"err": "boom"}]),
    (ResultT(None, STRING), [{"ok": None}, "ok", {"err": "no"}]),
    (ResultT(STRING, STRING), [{"ok": "y"}, {"err": "n"}]),
    (ResultT(), ["ok", {"err": None}]),
    (VariantT((("a", None), ("b", None))), ["a", {"b": None}]),
    (VariantT((("a", Prim("bool")), ("b", U32))), [{"a": True}, {"b": 1}]),
    (ListT(SHAPE), [[{"circle": 2}, "empty", {"rectangle": {"x": 0, "y": 0}}]]),
]


def test_values_round_trip_through_wasmtime() -> None:
    types = [t for t, _ in ROUND_TRIPS]
    ident = Identity(types, codec_echo(types))
    for k, (t, wires) in enumerate(ROUND_TRIPS):
        for w in wires:
            canon = lower(t, lift(t, w))
            ident.received.clear()
            out = ident.call(k, lift(t, w))
            (got,) = ident.received
            assert same(lower(t, got), canon), (t, w)  # what the host function saw
            assert same(lower(t, out), canon), (t, w)  # what came back out
            assert py_same(out, got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(val_types, st.data())
def test_random_values_round_trip_through_wasmtime(t: ValT, data: st.DataObject) -> None:
    ident = Identity([t], codec_echo([t]))
    for _ in range(3):
        wire, canon = data.draw(wire_pairs(t))
        try:
            value = lift(t, wire)
        except UnsupportedValue:
            assume(False)
            raise
        ident.received.clear()
        out = ident.call(0, value)
        assert same(lower(t, ident.received[0]), canon)
        assert same(lower(t, out), canon)


def test_wasmtime_quirks_are_real() -> None:
    """Why lift refuses some untagged cases: handed the bare value, wasmtime-py 50
    picks the first case whose classes match by isinstance(), not the intended one."""
    int_then_bool = VariantT((("a", U32), ("b", Prim("bool"))))
    greedy = ResultT(OptionT(U32), STRING)
    ident = Identity([int_then_bool, greedy], lambda k, x: x)
    assert ident.call(0, True) == 1  # sent as a(1), not b(true)
    assert ident.received == [1]
    with pytest.raises(ValueError, match="value not valid for this variant"):
        ident.call(1, "boom")  # err("boom") cannot be expressed untagged
    for t, wire in ((int_then_bool, {"b": True}), (greedy, {"err": "boom"})):
        with pytest.raises(UnsupportedValue, match="cannot be passed through wasmtime-py 50"):
            lift(t, wire)


# ---------------------------------------------------------------- a real componentize-py build

_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "components"
_S32, _S64, _U64 = Prim("s32"), Prim("s64"), Prim("u64")
_DEMO_POINT = RecordT((("x", _S32), ("y", _S32)))
_DEMO_PERSON = RecordT(
    (("name", STRING), ("age", U8), ("email", OptionT(STRING)), ("tags", ListT(STRING)))
)
_DEMO_SHAPE = VariantT((("circle", Prim("f64")), ("rectangle", _DEMO_POINT), ("empty", None)))
_DEMO_PERMS = FlagsT(("read", "write", "exec"))
TYPES_DEMO: dict[str, FuncSig] = {  # components/wit/examples.wit, interface types-demo
    "greet": FuncSig((("p", _DEMO_PERSON),), STRING),
    "area": FuncSig((("s", _DEMO_SHAPE),), Prim("f64")),
    "divide": FuncSig((("a", _S32), ("b", _S32)), ResultT(_S32, STRING)),
    "sum": FuncSig((("xs", ListT(_S64)),), _S64),
    "find": FuncSig((("people", ListT(_DEMO_PERSON)), ("name", STRING)), OptionT(_DEMO_PERSON)),
    "swap": FuncSig((("t", TupleT((STRING, U32))),), TupleT((U32, STRING))),
    "next-color": FuncSig((("c", COLOR),), COLOR),
    "grant": FuncSig((("p", _DEMO_PERMS), ("extra", _DEMO_PERMS)), _DEMO_PERMS),
    "reverse-bytes": FuncSig((("b", ListT(U8)),), ListT(U8)),
    "first-char": FuncSig((("s", STRING),), OptionT(Prim("char"))),
    "nested": FuncSig((("o", NESTED),), NESTED),
    "floats": FuncSig((("a", Prim("f32")), ("b", Prim("f64"))), TupleT((Prim("f32"), Prim("f64")))),
    "extremes": FuncSig(
        (("a", _U64), ("b", _S64), ("c", U8), ("d", Prim("s8"))),
        TupleT((_U64, _S64, U8, Prim("s8"))),
    ),
    "check": FuncSig((("ok", Prim("bool")),), ResultT(None, STRING)),
    "fail": FuncSig((("msg", STRING),), STRING),
    "hits": FuncSig((), _U64),
}


@pytest.mark.slow  # compiling the 18 MB component takes seconds
def test_types_demo_signatures_from_a_componentize_py_build() -> None:
    built = sorted(_CACHE.glob("echo-*.wasm"))
    if not built:
        pytest.skip("no built echo component in .cache/components (see components/build.py)")
    config = wasmtime.Config()
    config.cranelift_opt_level = "none"  # only the types are needed: compile fast
    engine = wasmtime.Engine(config)
    component = wc.Component.from_file(engine, str(built[0]))
    instance = component.type.exports(engine)["lattice:examples/types-demo@0.1.0"].ty
    sigs = {
        name: FuncSig.from_wasmtime(item.ty)
        for name, item in instance.exports(engine).items()
        if isinstance(item.ty, wc.FuncType)
    }
    assert sigs == TYPES_DEMO
