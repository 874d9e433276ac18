"""Binding Python implementations of WIT interfaces into a wasmtime-py component linker.

Theory of operation
-------------------
An `Interface` names a WIT interface (`wasi:io/streams`, no version), the resource
classes it declares and a Python function per WIT function. `define_imports` walks the
*component's own* import list and, for every imported instance whose unversioned name has
an `Interface`, defines that instance under the exact imported name (`@0.2.9` or
`@0.2.12` — whatever the component imports), its resources, and one host function per
imported function. Functions the Python side does not implement get the interface's
`fallback` (stubs derived from the type) or a function that traps naming the import.

Implementations are written against plain Python values:

* a resource parameter arrives as the Python object (`borrow<T>`: looked up in the
  store's table; `own<T>`: removed from it, since ownership moved to the host);
* a resource result is returned as a `HostResource` and pushed into the table;
* results are `Ok(value)` / `Err(value)`, variants are `wasmtime.component.Variant`
  (kebab-case tags, payload or None), options are `None` or the value, enums are `str`.

Per function, adapters built once from the wasmtime `FuncType` translate between that
and wasmtime-py's own representation, which depends on the type: a `result` or
`variant` is a tagged `Variant` only when its cases' Python classes overlap, and a bare
payload otherwise (`result<_, stream-error>` is tagged, `result<u64, stream-error>` is
not). Getting this right by hand for every function is what made the spike fail first;
deriving it from the type makes it impossible to get wrong. Values that wasmtime-py
cannot lower unambiguously (an `err` for `result<option<T>, E>`) trap with a message
instead of being silently lowered as the wrong case.

Every host function raises only `WasmtimeError` (anything else would go to wasmtime-py's
process-global exception slot, unsafe with calls on many threads), and processes every
borrowed handle before the implementation runs, so no path leaves a borrow behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import wasmtime
from wasmtime import WasmtimeError
from wasmtime.component import (
    BorrowType,
    Component,
    ComponentInstanceType,
    FuncType,
    Linker,
    ListType,
    OptionType,
    OwnType,
    ResourceAny,
    ResourceHost,
    ResourceType,
    ResultType,
    TupleType,
    ValType,
    Variant,
    VariantType,
)

from host.wasi._speedups import HostOwn, add_func, fast_resources
from host.wasi.state import WasiState, state_of

T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R", bound="type[HostResource]")

RESOURCE_ID_BASE = 0x5741_5300  # "WAS\0": far from the ids host/runtime/imports.py uses


class HostResource:
    """A Python object the guest holds a handle to (`own<T>`/`borrow<T>`).

    Subclasses are registered with `@resource(interface, name)`, which gives the class
    (and its subclasses) the host resource type id wasmtime uses to tell types apart.
    """

    type_id: ClassVar[int] = 0
    wit: ClassVar[tuple[str, str]] = ("", "")

    def on_drop(self) -> None:
        """The guest dropped its last handle (not called when ownership moved to the host)."""


_REGISTRY: dict[tuple[str, str], type[HostResource]] = {}


def resource(interface: str, name: str) -> Callable[[R], R]:
    """Class decorator: this class is WIT resource `name` of `interface`."""

    def register(cls: R) -> R:
        key = (interface, name)
        if key in _REGISTRY:
            raise ValueError(f"resource {interface}/{name} is already registered")
        cls.type_id = RESOURCE_ID_BASE + len(_REGISTRY) + 1
        cls.wit = key
        _REGISTRY[key] = cls
        return cls

    return register


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    value: T = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Err(Generic[E]):
    value: E = None  # type: ignore[assignment]


HostFn = Callable[..., Any]
"""`fn(state, *params) -> result`, in the plain-Python representation above."""

Fallback = Callable[[str, FuncType], HostFn | None]


@dataclass(frozen=True)
class Interface:
    name: str  # "wasi:io/streams"
    resources: tuple[type[HostResource], ...] = ()
    functions: Mapping[str, HostFn] = field(default_factory=dict)
    fallback: Fallback | None = None


# -- defining ----------------------------------------------------------------------------


def imported_instances(engine: wasmtime.Engine, component: Component) -> dict[str, str]:
    """Unversioned name → imported name, for every instance the component imports."""
    out = {}
    for full, ext in component.type.imports(engine).items():
        if isinstance(ext.ty, ComponentInstanceType):
            out[full.partition("@")[0]] = full
    return out


def define_imports(
    linker: Linker,
    engine: wasmtime.Engine,
    component: Component,
    interfaces: Mapping[str, Interface],
) -> list[str]:
    """Define every imported instance that has an `Interface`; returns the names defined."""
    defined = []
    with linker.root() as root:
        for full, ext in component.type.imports(engine).items():
            base = full.partition("@")[0]
            spec = interfaces.get(base)
            if spec is None or not isinstance(ext.ty, ComponentInstanceType):
                continue
            with root.add_instance(full) as inst:
                for cls in spec.resources:
                    inst.add_resource(cls.wit[1], ResourceType.host(cls.type_id), _drop)
                for fname, fext in ext.ty.exports(engine).items():
                    fty = fext.ty
                    if not isinstance(fty, FuncType):
                        continue
                    impl = spec.functions.get(fname)
                    if impl is None and spec.fallback is not None:
                        impl = spec.fallback(fname, fty)
                    if impl is None:
                        impl = _unimplemented(f"{base}#{fname}")
                    add_func(inst, fname, bind(f"{base}#{fname}", impl, fty), fty)
            defined.append(full)
    return defined


def _drop(store: Any, rep: int) -> None:
    try:
        obj = state_of(store).table.discard(rep)
        if obj is not None:
            obj.on_drop()
    except WasmtimeError:
        raise
    except Exception as exc:  # keep wasmtime-py's global exception slot empty
        msg = f"dropping a host resource failed: {type(exc).__name__}: {exc}"
        raise WasmtimeError(msg) from None


def _unimplemented(qualname: str) -> HostFn:
    def trap(state: WasiState, *args: Any) -> Any:
        raise WasmtimeError(f"{qualname} is not implemented by the host's Python WASI layer")

    return trap


def bind(qualname: str, impl: HostFn, fty: FuncType) -> Callable[..., Any]:
    """Wrap `impl` as a wasmtime-py host function with adapters derived from `fty`."""
    lifts = [_lift_adapter(ty) for _, ty in fty.params]
    lower = _lower_adapter(fty.result) if fty.result is not None else None
    adapt_args = any(a is not None for a in lifts)

    def host_fn(store: Any, *args: Any) -> Any:
        try:
            state = state_of(store)
            if adapt_args:
                args = tuple(
                    v if a is None else a(state, store, v) for a, v in zip(lifts, args, strict=True)
                )
            value = impl(state, *args)
            return value if lower is None else lower(state, value)
        except WasmtimeError:
            raise
        except Exception as exc:  # keep wasmtime-py's global exception slot empty
            raise WasmtimeError(f"{qualname}: {type(exc).__name__}: {exc}") from None

    host_fn.__qualname__ = qualname
    return host_fn


# -- guest → host (parameters) -----------------------------------------------------------

Lift = Callable[[WasiState, Any, Any], Any]
Lower = Callable[[WasiState, Any], Any]


def _classes(ty: ValType | None) -> tuple[type, ...]:
    s: set[type] = set()
    if ty is None:
        s.add(object)
    else:
        ty.add_classes(s)
    return tuple(s)


def _tagged(ty: ValType) -> bool:
    # wasmtime-py's own rule (a private method, pinned with wasmtime < 51 like host/runtime)
    return bool(ty._tagged())  # type: ignore[attr-defined]


def _lift_adapter(ty: ValType) -> Lift | None:
    """Converts a lifted parameter to the plain-Python form, or None when it already is."""
    if isinstance(ty, BorrowType):
        return lambda st, store, v: st.table.get(v.to_host(store).rep)
    if isinstance(ty, OwnType):
        return lambda st, store, v: st.table.take(v.to_host(store).rep)
    if isinstance(ty, ListType):
        elem = _lift_adapter(ty.element)
        if elem is None:
            return None
        return lambda st, store, v: [elem(st, store, e) for e in v]
    if isinstance(ty, TupleType):
        elems = [_lift_adapter(t) for t in ty.elements]
        if all(e is None for e in elems):
            return None
        return lambda st, store, v: tuple(
            x if a is None else a(st, store, x) for a, x in zip(elems, v, strict=True)
        )
    if isinstance(ty, OptionType):
        inner = _lift_adapter(ty.payload)
        if _tagged(ty):

            def lift_tagged_option(st: WasiState, store: Any, v: Any) -> Any:
                if v.tag == "none":
                    return None
                return v.payload if inner is None else inner(st, store, v.payload)

            return lift_tagged_option
        if inner is None:
            return None
        return lambda st, store, v: None if v is None else inner(st, store, v)
    if isinstance(ty, ResultType):
        return _lift_cases(ty, [("ok", ty.ok), ("err", ty.err)], result=True)
    if isinstance(ty, VariantType):
        return _lift_cases(ty, ty.cases, result=False)
    return None


def _lift_cases(
    ty: ValType, cases: list[tuple[str, ValType | None]], *, result: bool
) -> Lift | None:
    inner = {name: (_lift_adapter(t) if t is not None else None) for name, t in cases}
    tagged = _tagged(ty)
    if not result and tagged and all(a is None for a in inner.values()):
        return None
    matchers = [(name, t, _classes(t)) for name, t in cases]

    def wrap(tag: str, payload: Any) -> Any:
        if result:
            return Ok(payload) if tag == "ok" else Err(payload)
        return Variant(tag, payload)

    def case_of(v: Any) -> str:
        """Untagged, wasmtime-py dropped the tag: the payload's class says which case."""
        for name, t, classes in matchers:
            if (v is None) if t is None else isinstance(v, classes):
                return name
        raise WasmtimeError(f"cannot tell which case {v!r} is")

    def lift(st: WasiState, store: Any, v: Any) -> Any:
        if tagged:
            tag, payload = v.tag, v.payload
        else:
            tag, payload = case_of(v), v
        adapt = inner[tag]
        if adapt is not None and payload is not None:
            payload = adapt(st, store, payload)
        return wrap(tag, payload)

    return lift


# -- host → guest (results) --------------------------------------------------------------


def _lower_adapter(ty: ValType) -> Lower | None:
    """Converts a plain-Python result to wasmtime-py's form, or None when it already is."""
    if isinstance(ty, OwnType):
        return lower_own
    if isinstance(ty, ListType):
        elem = _lower_adapter(ty.element)
        if elem is None:
            return None
        return lambda st, v: [elem(st, e) for e in v]
    if isinstance(ty, TupleType):
        elems = [_lower_adapter(t) for t in ty.elements]
        if all(e is None for e in elems):
            return None
        return lambda st, v: tuple(
            x if a is None else a(st, x) for a, x in zip(elems, v, strict=True)
        )
    if isinstance(ty, OptionType):
        inner = _lower_adapter(ty.payload)
        if _tagged(ty):
            return lambda st, v: (
                Variant("none")
                if v is None
                else Variant("some", v if inner is None else inner(st, v))
            )
        if inner is None:
            return None
        return lambda st, v: None if v is None else inner(st, v)
    if isinstance(ty, ResultType):
        return _lower_cases(ty, [("ok", ty.ok), ("err", ty.err)], result=True)
    if isinstance(ty, VariantType):
        return _lower_cases(ty, ty.cases, result=False)
    return None


def lower_own(st: WasiState, v: Any) -> Any:
    """A host object handed to the guest as `own<T>`: into the table, out as a handle."""
    if isinstance(v, ResourceHost | ResourceAny | HostOwn):
        return v
    if not isinstance(v, HostResource):
        raise WasmtimeError(f"expected a host resource, got {type(v).__name__}")
    if fast_resources():
        return HostOwn(st.table.push(v), v.type_id)
    return ResourceHost.own(st.table.push(v), v.type_id)


def _lower_cases(
    ty: ValType, cases: list[tuple[str, ValType | None]], *, result: bool
) -> Lower | None:
    inner = {name: (_lower_adapter(t) if t is not None else None) for name, t in cases}
    tagged = _tagged(ty)
    if not result and tagged and all(a is None for a in inner.values()):
        return None
    # Untagged, wasmtime-py lowers a value as the FIRST case whose classes accept it (a
    # case without payload accepts only None). A case is unreachable when an earlier one
    # accepts everything (`object`: an untagged option or result in its payload).
    shadowed: set[str] = set()
    if not tagged:
        swallowing = False
        for name, t in cases:
            if swallowing:
                shadowed.add(name)
            if t is not None and object in _classes(t):
                swallowing = True
    where = "result" if result else "variant"

    def lower(st: WasiState, v: Any) -> Any:
        if result:
            if isinstance(v, Ok):
                tag, payload = "ok", v.value
            elif isinstance(v, Err):
                tag, payload = "err", v.value
            else:
                raise WasmtimeError(f"expected Ok(...) or Err(...), got {v!r}")
        elif isinstance(v, Variant):
            tag, payload = v.tag, v.payload
        else:
            raise WasmtimeError(f"expected a Variant, got {v!r}")
        if tag not in inner:
            raise WasmtimeError(f"{where} has no case {tag!r}")
        adapt = inner[tag]
        if adapt is not None:
            payload = adapt(st, payload)
        if tagged:
            return Variant(tag, payload)
        if tag in shadowed:
            raise WasmtimeError(
                f"wasmtime-py cannot lower the {tag!r} case of this {where} unambiguously"
            )
        return payload

    return lower
