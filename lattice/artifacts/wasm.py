"""What a WebAssembly file is, and the names a component imports and exports. Pure.

`check_component` refuses core modules and non-WebAssembly files before wasmtime sees
them, so the error says what the file is. `world` reads the top-level import and
export sections of a component's binary (the names only, such as
`wasi:cli/environment@0.2.0`) without compiling it: an OCI config and `lattice inspect`
need them, and compiling an 18 MB component just to list names would take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"
COMPONENT_LAYER = b"\x01\x00"
_IMPORT_SECTION = 10
_EXPORT_SECTION = 11


class NotAComponent(ValueError):
    """The bytes are not a WebAssembly component; the message says what they are."""


def check_component(data: bytes | bytearray | memoryview, ref: str) -> None:
    head = bytes(data[:8])
    if len(head) < 8 or head[:4] != WASM_MAGIC:
        raise NotAComponent(f"{ref} is not a WebAssembly file (no \\0asm header)")
    if head[4:8] == CORE_VERSION:
        raise NotAComponent(
            f"{ref} is a core WebAssembly module, not a component; "
            "wrap it with `wasm-tools component new` first"
        )
    if head[6:8] != COMPONENT_LAYER:
        raise NotAComponent(f"{ref} has an unknown WebAssembly layer/version {head[4:8].hex()}")


@dataclass(frozen=True)
class World:
    imports: tuple[str, ...]
    exports: tuple[str, ...]


class _Reader:
    def __init__(self, data: memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise NotAComponent("component binary ends inside a section")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 35:
                raise NotAComponent("malformed LEB128 integer in component binary")

    def name(self) -> str:
        n = self.u32()
        if self.pos + n > self.end:
            raise NotAComponent("component binary ends inside a name")
        raw = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def extern_name(self) -> str:
        tag = self.byte()
        if tag not in (0x00, 0x01):
            raise NotAComponent(f"unknown import/export name encoding 0x{tag:02x}")
        name = self.name()
        if tag == 0x01:  # a version suffix follows the name
            self.name()
        return name

    def externdesc(self) -> None:
        kind = self.byte()
        if kind == 0x00:  # core module: 0x11 typeidx
            self.byte()
            self.u32()
        elif kind in (0x01, 0x04, 0x05):  # func, component, instance: typeidx
            self.u32()
        elif kind == 0x02:  # value bound: eq valueidx | valtype (one LEB either way)
            self.byte()
            self.u32()
        elif kind == 0x03:  # type bound: eq typeidx | sub resource
            if self.byte() == 0x00:
                self.u32()
        else:
            raise NotAComponent(f"unknown extern kind 0x{kind:02x} in component binary")


def world(data: bytes | bytearray | memoryview) -> World:
    """Top-level import and export names of a component, in binary order."""
    check_component(data, "component")
    view = memoryview(data)
    top = _Reader(view, 8)
    imports: list[str] = []
    exports: list[str] = []
    while top.pos < top.end:
        section = top.byte()
        size = top.u32()
        start = top.pos
        if start + size > top.end:
            raise NotAComponent("component binary ends inside a section")
        if section == _IMPORT_SECTION:
            r = _Reader(view, start, start + size)
            for _ in range(r.u32()):
                imports.append(r.extern_name())
                r.externdesc()
        elif section == _EXPORT_SECTION:
            r = _Reader(view, start, start + size)
            for _ in range(r.u32()):
                exports.append(r.extern_name())
                sort = r.byte()
                if sort == 0x00:  # core sort
                    r.byte()
                r.u32()
                if r.byte() == 0x01:  # an explicit type ascription follows
                    r.externdesc()
        top.pos = start + size
    return World(tuple(dict.fromkeys(imports)), tuple(dict.fromkeys(exports)))
