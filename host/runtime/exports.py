"""What a component exports, read from its own type.

Each exported function gets an operation name, `ns:pkg/iface.fn` for functions inside
an exported interface (the version is dropped: it contains dots, which subjects cannot)
or `fn` for functions exported at the world level. Only package-qualified interfaces
are served: plain-named instances are toolchain internals. Callers may use a shorter form when
it is unambiguous (`echo` or `echo.echo` for `lattice:examples/echo.echo`); `resolve`
decides, and an unknown name gets the list of real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime
from wasmtime.component import Component, ComponentInstanceType, FuncType

from lattice.protocol.subjects import strip_version
from lattice.valtype import FuncSig


@dataclass(frozen=True)
class Export:
    operation: str  # "ns:pkg/iface.fn" or "fn"
    path: tuple[str, ...]  # export names to walk: ("ns:pkg/iface@1.0.0", "fn") or ("fn",)
    sig: FuncSig


class UnknownFunction(LookupError):
    pass


def list_exports(engine: wasmtime.Engine, component: Component) -> dict[str, Export]:
    out: dict[str, Export] = {}
    for name, ext in component.type.exports(engine).items():
        item = ext.ty
        if isinstance(item, FuncType):
            out[name] = Export(name, (name,), FuncSig.from_wasmtime(item))
        elif isinstance(item, ComponentInstanceType) and is_package_interface(name):
            iface = strip_version(name)
            for fname, fext in item.exports(engine).items():
                fitem = fext.ty
                if isinstance(fitem, FuncType):
                    op = f"{iface}.{fname}"
                    out[op] = Export(op, (name, fname), FuncSig.from_wasmtime(fitem))
    return out


def is_package_interface(name: str) -> bool:
    """`ns:pkg/iface[@ver]`. Toolchains add plain-named internal instances (componentize-py
    exports `exports` with an `init` hook); those are not part of the component's API."""
    return ":" in name and "/" in name


def resolve(exports: dict[str, Export], name: str) -> Export:
    """Find `name` exactly, or as a unique suffix (`fn`, `iface.fn`, `pkg/iface.fn`)."""
    found = exports.get(name)
    if found is not None:
        return found
    matches = [
        e
        for op, e in exports.items()
        if op.endswith("/" + name) or op.endswith("." + name) or op.endswith(":" + name)
    ]
    if len(matches) == 1:
        return matches[0]
    available = ", ".join(sorted(exports)) or "(none)"
    if len(matches) > 1:
        names = ", ".join(sorted(m.operation for m in matches))
        raise UnknownFunction(f"function {name!r} is ambiguous: it matches {names}")
    raise UnknownFunction(f"no exported function {name!r}; exported functions: {available}")
