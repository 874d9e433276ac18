"""`wasmcloud:postgres@0.1.1-draft` `pg-value`s <-> PostgreSQL, as the wire carries them.

On the wire (lattice/codec.py) a `pg-value` is a one-entry map `{case: payload}`
(`{"null": None}`, or the bare string `"null"`), a `hashable-f64` is the array
`[mantissa, exponent, sign]` of Rust's `f64::integer_decode` (value = sign * mantissa *
2**exponent), records are maps with the WIT's field names, tuples arrays, `list<u8>` bin.

Parameters: every supported case is sent as *text with an explicit type* (`int8`,
`float8`, `timestamptz`, `text[]`, …), so the server parses it exactly as it would a
literal of that type and nothing is guessed here. A case this provider does not carry
(geometry, bit strings, ranges, hstore, …) is a `ParamError` naming the case and the
parameter; so is a payload that does not fit its case.

Rows: every column arrives in text format. bool, int2/4/8, float4/8 and bytea (and their
arrays) are decoded by psycopg; every other type by `from_column` from the server's
own text (TimeZone UTC, DateStyle ISO: `providers.sqldb_postgres.settings`), so a
value is never lost to a Python type that cannot hold it (BC dates, `infinity`). A
column type without a `pg-value` case here comes back as `{"text": <server text>}`, so
converting a row never fails after a statement has run.
"""

from __future__ import annotations

import math
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg import adapters as default_adapters
from psycopg import postgres
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format
from psycopg.types.string import TextLoader

S16 = (-(2**15), 2**15 - 1)
S32 = (-(2**31), 2**31 - 1)
S64 = (-(2**63), 2**63 - 1)
U32 = (0, 2**32 - 1)
U64 = (0, 2**64 - 1)


class ParamError(ValueError):
    """A parameter this provider cannot send; the message names it (never its value)."""


# ---------------------------------------------------------------- hashable floats


def encode_f64(x: float) -> list[int]:
    """Rust's `f64::integer_decode`: [mantissa, exponent, sign]."""
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    sign = 1 if bits >> 63 == 0 else -1
    exponent = (bits >> 52) & 0x7FF
    frac = bits & 0xFFFFFFFFFFFFF
    mantissa = frac << 1 if exponent == 0 else frac | 0x10000000000000
    return [mantissa, exponent - 1075, sign]


def encode_f32(x: float) -> list[int]:
    """Rust's `f32::integer_decode` (mantissa widened to u64)."""
    bits = struct.unpack("<I", struct.pack("<f", x))[0]
    sign = 1 if bits >> 31 == 0 else -1
    exponent = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    mantissa = frac << 1 if exponent == 0 else frac | 0x800000
    return [mantissa, exponent - 150, sign]


def decode_hashable(value: Any, *, f32: bool) -> float:
    """The float a hashable-f64 (or -f32) stands for, infinities and NaN included."""
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ParamError("expected a hashable float [mantissa, exponent, sign]")
    mantissa, exponent, sign = value
    if sign not in (1, -1) or mantissa < 0:
        raise ParamError("a hashable float needs sign 1 or -1 and a mantissa >= 0")
    special = (105, 0x800000) if f32 else (972, 0x10000000000000)
    if exponent == special[0]:  # the all-ones exponent: infinity or NaN
        return sign * math.inf if mantissa == special[1] else math.nan
    try:
        return sign * math.ldexp(mantissa, exponent)
    except OverflowError:
        raise ParamError("hashable float out of range") from None


def _float_text(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(x)


# ---------------------------------------------------------------- dates and times


def _int_in(value: Any, lo_hi: tuple[int, int], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo_hi[0] <= value <= lo_hi[1]:
        raise ParamError(f"expected {what} ({lo_hi[0]}..{lo_hi[1]})")
    return value


def _record(value: Any, fields: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(fields):
        raise ParamError(f"expected a {what} record with fields {', '.join(fields)}")
    return value


def _case(value: Any, what: str) -> tuple[str, Any]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and len(value) == 1:
        ((name, payload),) = value.items()
        if isinstance(name, str):
            return name, payload
    raise ParamError(f"expected a {what} variant: a map {{case: payload}}")


def date_text(value: Any) -> str:
    """A WIT `date` as PostgreSQL date text: `infinity`, `-infinity` or `YYYY-MM-DD[ BC]`."""
    case, payload = _case(value, "date")
    if case == "positive-infinity":
        return "infinity"
    if case == "negative-infinity":
        return "-infinity"
    if case != "ymd":
        raise ParamError(f"unknown date case {case!r}")
    if not isinstance(payload, (list, tuple)) or len(payload) != 3:
        raise ParamError("date ymd needs [year, month, day]")
    year = _int_in(payload[0], S32, "year")
    month = _int_in(payload[1], (1, 12), "month")
    day = _int_in(payload[2], (1, 31), "day")
    if year >= 1:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{1 - year:04d}-{month:02d}-{day:02d} BC"  # astronomical year 0 is 1 BC


def time_text(value: Any) -> str:
    t = _record(value, ("hour", "min", "sec", "micro"), "time")
    hour = _int_in(t["hour"], (0, 24), "hour")
    minute = _int_in(t["min"], (0, 59), "min")
    sec = _int_in(t["sec"], (0, 60), "sec")
    micro = _int_in(t["micro"], (0, 999_999), "micro")
    return f"{hour:02d}:{minute:02d}:{sec:02d}.{micro:06d}"


def _split_bc(d: str) -> tuple[str, bool]:
    return (d[:-3], True) if d.endswith(" BC") else (d, False)


def timestamp_text(value: Any) -> str:
    ts = _record(value, ("date", "time"), "timestamp")
    d = date_text(ts["date"])
    if d in ("infinity", "-infinity"):
        return d
    d, bc = _split_bc(d)
    return f"{d} {time_text(ts['time'])}{' BC' if bc else ''}"


def timestamptz_text(value: Any) -> str:
    tz = _record(value, ("timestamp", "offset"), "timestamp-tz")
    base = timestamp_text(tz["timestamp"])
    if base in ("infinity", "-infinity"):
        return base
    case, secs = _case(tz["offset"], "offset")
    if case not in ("eastern-hemisphere-secs", "western-hemisphere-secs"):
        raise ParamError(f"unknown offset case {case!r}")
    secs = _int_in(secs, (0, 16 * 3600 - 1), case)
    sign = "+" if case == "eastern-hemisphere-secs" else "-"
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    base, bc = _split_bc(base)
    return f"{base}{sign}{h:02d}:{m:02d}:{s:02d}{' BC' if bc else ''}"


_DATE = re.compile(r"^(\d{4,})-(\d{2})-(\d{2})( BC)?$")
_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?")
_TS = re.compile(
    r"^(\d{4,})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?([+-]\S+)?( BC)?$"
)


def _year(text: str, bc: str | None) -> int:
    return 1 - int(text) if bc else int(text)


def _micro(frac: str | None) -> int:
    return int((frac or "0").ljust(6, "0"))


def _time(h: str, m: str, s: str, frac: str | None) -> dict[str, int]:
    return {"hour": int(h), "min": int(m), "sec": int(s), "micro": _micro(frac)}


def date_value(text: str) -> dict[str, Any] | None:
    if text == "infinity":
        return {"positive-infinity": None}
    if text == "-infinity":
        return {"negative-infinity": None}
    m = _DATE.match(text)
    if m is None:
        return None
    return {"ymd": [_year(m[1], m[4]), int(m[2]), int(m[3])]}


def time_value(text: str) -> dict[str, int] | None:
    m = _TIME.match(text)
    return None if m is None else _time(m[1], m[2], m[3], m[4])


def timestamp_value(text: str) -> dict[str, Any] | None:
    if text in ("infinity", "-infinity"):
        return {"date": date_value(text), "time": _time("0", "0", "0", None)}
    m = _TS.match(text)
    if m is None or m[8]:
        return None
    return {
        "date": {"ymd": [_year(m[1], m[9]), int(m[2]), int(m[3])]},
        "time": _time(*m.group(4, 5, 6, 7)),
    }


def timestamptz_value(text: str) -> dict[str, Any] | None:
    """Sessions run with TimeZone UTC, so the server writes `…+00`; the value is UTC."""
    if text in ("infinity", "-infinity"):
        ts = timestamp_value(text)
    else:
        m = _TS.match(text)
        if m is None or m[8] not in ("+00", "+00:00", "-00"):
            return None
        ts = {
            "date": {"ymd": [_year(m[1], m[9]), int(m[2]), int(m[3])]},
            "time": _time(*m.group(4, 5, 6, 7)),
        }
    return None if ts is None else {"timestamp": ts, "offset": {"western-hemisphere-secs": 0}}


# ---------------------------------------------------------------- parameters


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ParamError("expected a string")
    return value


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value
    ):
        return bytes(value)
    raise ParamError("expected bytes")


def _bool(value: Any) -> str:
    if not isinstance(value, bool):
        raise ParamError("expected a bool")
    return "t" if value else "f"


def _numeric(value: Any) -> str:
    text = _string(value).strip()
    try:
        Decimal(text)
    except InvalidOperation:
        raise ParamError("expected a decimal number in a string") from None
    return text


def _uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(_string(value)))
    except ValueError:
        raise ParamError("expected a UUID string") from None


def _bytea(value: Any) -> str:
    return "\\x" + _bytes(value).hex()


def _varchar(value: Any) -> str:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ParamError("expected [limit or nil, bytes]")
    limit, raw = value
    try:
        text = _bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError("varchar bytes are not UTF-8") from None
    if limit is not None and len(text) > _int_in(limit, U32, "limit"):
        raise ParamError(f"{len(text)} characters exceed the limit {limit}")
    return text


def _char(value: Any) -> str:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ParamError("expected [length, bytes]")
    length, raw = value
    data = _bytes(raw)
    if _int_in(length, U32, "length") != len(data):
        raise ParamError(f"char length {length} does not match {len(data)} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamError("char bytes are not UTF-8") from None


def _mac(n: int) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        rec = _record(value, ("bytes",), f"mac-address-eui{n * 8}")
        octets = _bytes(rec["bytes"])
        if len(octets) != n:
            raise ParamError(f"expected {n} bytes")
        return ":".join(f"{b:02x}" for b in octets)

    return convert


def _lsn(value: Any) -> str:
    n = _int_in(value, U64, "u64")
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


def _ints(lo_hi: tuple[int, int], what: str) -> Callable[[Any], str]:
    return lambda value: str(_int_in(value, lo_hi, what))


def _floats(f32: bool) -> Callable[[Any], str]:
    return lambda value: _float_text(decode_hashable(value, f32=f32))


# case -> (PostgreSQL type, element converter to text); `-array` cases are derived below.
_SCALARS: dict[str, tuple[str, Callable[[Any], str]]] = {
    **{c: ("int8", _ints(S64, "s64")) for c in ("big-int", "int8", "big-serial", "serial8")},
    **{c: ("int4", _ints(S32, "s32")) for c in ("integer", "int", "int4")},
    **{c: ("int8", _ints(U32, "u32")) for c in ("serial", "serial4")},
    **{c: ("int2", _ints(S16, "s16")) for c in ("small-int", "int2", "small-serial", "serial2")},
    "bool": ("bool", _bool),
    "boolean": ("bool", _bool),
    **{c: ("float8", _floats(False)) for c in ("double", "float8")},
    **{c: ("float4", _floats(True)) for c in ("real", "float4")},
    **{c: ("numeric", _numeric) for c in ("numeric", "decimal")},
    "money": ("money", _string),
    "bytea": ("bytea", _bytea),
    "char": ("bpchar", _char),
    "varchar": ("varchar", _varchar),
    "cidr": ("cidr", _string),
    "inet": ("inet", _string),
    "macaddr": ("macaddr", _mac(6)),
    "macaddr8": ("macaddr8", _mac(8)),
    "date": ("date", date_text),
    "time": ("time", time_text),
    "timestamp": ("timestamp", timestamp_text),
    "timestamp-tz": ("timestamptz", timestamptz_text),
    "json": ("json", _string),
    "jsonb": ("jsonb", _string),
    "pg-lsn": ("pg_lsn", _lsn),
    "name": ("name", _string),
    "text": ("text", _string),
    "xml": ("xml", _string),
    "ts-query": ("tsquery", _string),
    "uuid": ("uuid", _uuid),
}
_ARRAYS: dict[str, str] = {  # array case -> its element's case
    "int8-array": "int8",
    "bool-array": "bool",
    "float8-array": "float8",
    "float4-array": "float4",
    "int4-array": "int4",
    "numeric-array": "numeric",
    "int2-array": "int2",
    "bytea-array": "bytea",
    "char-array": "char",
    "varchar-array": "varchar",
    "cidr-array": "cidr",
    "inet-array": "inet",
    "macaddr-array": "macaddr",
    "macaddr8-array": "macaddr8",
    "date-array": "date",
    "time-array": "time",
    "timestamp-array": "timestamp",
    "timestamp-tz-array": "timestamp-tz",
    "json-array": "json",
    "jsonb-array": "jsonb",
    "money-array": "money",
    "pg-lsn-array": "pg-lsn",
    "name-array": "name",
    "text-array": "text",
    "xml-array": "xml",
    "uuid-array": "uuid",
}
SUPPORTED_PARAMS = ("null", *sorted([*_SCALARS, *_ARRAYS]))


def array_text(items: list[str | None]) -> str:
    """A one-dimensional PostgreSQL array literal; every element quoted, NULL bare."""
    out = []
    for item in items:
        if item is None:
            out.append("NULL")
        else:
            out.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(out) + "}"


class Param:
    """One parameter as sent: its text and the PostgreSQL type it is for."""

    __slots__ = ("text", "type_name")

    def __init__(self, type_name: str, text: str) -> None:
        self.type_name = type_name
        self.text = text


def to_param(index: int, wire: Any) -> Param | None:
    """The parameter `$index+1` for wire pg-value `wire`; None is SQL NULL."""
    where = f"params[{index}] (${index + 1})"
    try:
        case, payload = _case(wire, "pg-value")
    except ParamError as exc:
        raise ParamError(f"{where}: {exc}") from None
    if case == "null":
        return None
    try:
        if case in _SCALARS:
            type_name, convert = _SCALARS[case]
            return Param(type_name, convert(payload))
        if case in _ARRAYS:
            type_name, convert = _SCALARS[_ARRAYS[case]]
            if not isinstance(payload, (list, tuple)):
                raise ParamError("expected a list")
            items: list[str | None] = []
            for i, item in enumerate(payload):
                try:
                    items.append(convert(item))
                except ParamError as exc:
                    raise ParamError(f"element {i}: {exc}") from None
            return Param(f"{type_name}[]", array_text(items))
    except ParamError as exc:
        raise ParamError(f"{where}: pg-value case {case!r}: {exc}") from None
    raise ParamError(
        f"{where}: pg-value case {case!r} is not supported by this provider "
        f"(supported: {', '.join(SUPPORTED_PARAMS)})"
    )


# ---------------------------------------------------------------- psycopg adaptation


class _ParamDumper(Dumper):
    """Dumps a `Param` as its text, typed with the oid of its PostgreSQL type."""

    format = Format.TEXT

    def get_key(self, obj: Any, format: Any) -> Any:
        return (Param, obj.type_name)

    def upgrade(self, obj: Any, format: Any) -> Dumper:
        dumper = _ParamDumper(Param, self.connection)
        dumper.oid = _oid(obj.type_name)
        return dumper

    def dump(self, obj: Any) -> bytes:
        return obj.text.encode("utf-8")


def _oid(type_name: str) -> int:
    array = type_name.endswith("[]")
    info = postgres.types.get(type_name.removesuffix("[]"))
    if info is None:
        raise ParamError(f"unknown PostgreSQL type {type_name}")
    return info.array_oid if array else info.oid


OID = {name: postgres.types[name].oid for name in (
    "bool", "int2", "int4", "int8", "float4", "float8", "bytea", "numeric", "money", "text",
    "varchar", "bpchar", '"char"', "name", "xml", "json", "jsonb", "uuid", "inet", "cidr",
    "macaddr", "macaddr8", "date", "time", "timestamp", "timestamptz", "pg_lsn",
)}  # fmt: skip
_PSYCOPG_DECODES = {OID[n] for n in ("bool", "int2", "int4", "int8", "float4", "float8", "bytea")}


def adapters() -> AdaptersMap:
    """The adaptation context of every provider connection: `Param` dumping, and text
    for every column type psycopg would turn into something `from_column` does not
    expect (arrays keep psycopg's array loader, with these element loaders)."""
    context = AdaptersMap(default_adapters)
    context.register_dumper(Param, _ParamDumper)
    for info in postgres.types:
        if info.oid not in _PSYCOPG_DECODES:
            context.register_loader(info.oid, TextLoader)
    return context


# ---------------------------------------------------------------- rows


def _mac_value(text: str) -> dict[str, Any] | None:
    parts = text.split(":")
    try:
        return {"bytes": [int(p, 16) for p in parts]}
    except ValueError:
        return None


def _lsn_value(text: str) -> int | None:
    hi, sep, lo = text.partition("/")
    try:
        return (int(hi, 16) << 32) | int(lo, 16) if sep else None
    except ValueError:
        return None


def _encoded(text: str) -> list[Any]:
    data = text.encode("utf-8")
    return [len(data), data]


_FROM_TEXT: dict[int, tuple[str, Callable[[str], Any]]] = {
    OID["numeric"]: ("numeric", str),
    OID["money"]: ("money", str),
    OID["text"]: ("text", str),
    OID["varchar"]: ("varchar", lambda t: [None, t.encode("utf-8")]),
    OID["bpchar"]: ("char", _encoded),
    OID['"char"']: ("char", _encoded),
    OID["name"]: ("name", str),
    OID["xml"]: ("xml", str),
    OID["json"]: ("json", str),
    OID["jsonb"]: ("jsonb", str),
    OID["uuid"]: ("uuid", str),
    OID["inet"]: ("inet", str),
    OID["cidr"]: ("cidr", str),
    OID["macaddr"]: ("macaddr", _mac_value),
    OID["macaddr8"]: ("macaddr8", _mac_value),
    OID["date"]: ("date", date_value),
    OID["time"]: ("time", time_value),
    OID["timestamp"]: ("timestamp", timestamp_value),
    OID["timestamptz"]: ("timestamp-tz", timestamptz_value),
    OID["pg_lsn"]: ("pg-lsn", _lsn_value),
}
_DECODED: dict[int, tuple[str, Callable[[Any], Any]]] = {
    OID["bool"]: ("bool", bool),
    OID["int2"]: ("int2", int),
    OID["int4"]: ("int4", int),
    OID["int8"]: ("int8", int),
    OID["float4"]: ("float4", encode_f32),
    OID["float8"]: ("float8", encode_f64),
    OID["bytea"]: ("bytea", bytes),
}
_ARRAY_CASE = {v: k for k, v in _ARRAYS.items()}
_ELEMENT_OF = {
    info.array_oid: info.oid for info in postgres.types if info.array_oid and info.oid in {
        *_FROM_TEXT, *_DECODED}
}  # fmt: skip


def _scalar_text(value: Any) -> str:
    """PostgreSQL-like text for a value psycopg decoded (used only for the fallback)."""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, list):
        return _array_literal(value)
    return str(value)


def _array_literal(value: list[Any]) -> str:
    """Array text for what psycopg decoded, nested arrays and NULL elements included."""
    parts = []
    for v in value:
        if isinstance(v, list):
            parts.append(_array_literal(v))
        else:
            parts.append(array_text([None if v is None else _scalar_text(v)])[1:-1])
    return "{" + ",".join(parts) + "}"


def _convert(oid: int, value: Any) -> tuple[str, Any] | None:
    if oid in _DECODED:
        case, fn = _DECODED[oid]
        return case, fn(value)
    if oid in _FROM_TEXT and isinstance(value, str):
        case, fn = _FROM_TEXT[oid]
        out = fn(value)
        return None if out is None else (case, out)
    return None


def from_column(oid: int, value: Any) -> dict[str, Any]:
    """The wire pg-value for one column value of type `oid` (None is `null`)."""
    if value is None:
        return {"null": None}
    element = _ELEMENT_OF.get(oid)
    if element is not None and isinstance(value, list):
        converted = []
        ok = True
        for item in value:
            got = None if item is None or isinstance(item, list) else _convert(element, item)
            if got is None:
                ok = False
                break
            converted.append(got)
        scalar_case = converted[0][0] if converted else _convert_case(element)
        array_case = _ARRAY_CASE.get(scalar_case or "")
        if ok and array_case is not None:
            return {array_case: [v for _, v in converted]}
        return {"text": _scalar_text(value)}
    got = _convert(oid, value)
    if got is not None:
        return {got[0]: got[1]}
    return {"text": value if isinstance(value, str) else _scalar_text(value)}


def _convert_case(oid: int) -> str | None:
    if oid in _DECODED:
        return _DECODED[oid][0]
    if oid in _FROM_TEXT:
        return _FROM_TEXT[oid][0]
    return None
