"""Manifest validation: every problem at once, each with its path, reason and line.

`validate(source)` takes YAML or JSON text (or bytes, or an already parsed mapping) and
returns a `ValidationReport`: errors (the manifest cannot be deployed), warnings (it can,
but probably not as meant) and the parsed `Manifest` when there are no errors.

Three passes, each collecting everything it finds instead of stopping at the first:

1. Parsing (`source.py`). YAML syntax errors carry their line and column; duplicate
   mapping keys are errors too (PyYAML would silently keep the last one).
2. Shape, by the pydantic models in `manifest.py` (this module). Pydantic's locations
   are rewritten as paths (`spec.components[2].traits[0].properties.instances`, the
   discriminator tag dropped) and its messages shortened (`must be >= 0`); an unknown
   field gets a "did you mean" suggestion or a hint for fields carried over from wadm.
3. Meaning (`checks.py`): duplicate names and ids, one scaler per component, spread
   weights, link identities and targets, colliding config names; and the warnings.

When the source was text, each problem carries the line of the node its path leads to
(`source.Lines`). Nothing here does I/O; `validate_file` only reads the file it is given.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ValidationError

from lattice.controller.checks import check
from lattice.controller.manifest import Manifest
from lattice.controller.report import (
    DOCUMENT,
    ManifestError,
    Problem,
    Segment,
    ValidationReport,
)
from lattice.controller.source import Lines, parse

# Extra fields people carry over from wadm or older formats, with what to do instead.
_HINTS = {
    "secrets": "secrets are not supported yet; use config (marked secret with "
    "`lattice config put --secret`) and refer to it by name",
    "source_config": "the old link format: use `source: {config: [...]}`",
    "target_config": "the old link format: use `target: {name: ..., config: [...]}`",
    "application": "shared components from other applications are not supported; "
    "give a provider the same `id` and image in both applications to share it",
}


def validate(source: str | bytes | Mapping[str, Any]) -> ValidationReport:
    """Check a manifest given as YAML/JSON text or as parsed data; never raises for bad
    input (every problem is in the report)."""
    tree: yaml.Node | None = None
    if isinstance(source, Mapping):
        data: Any = source
    else:
        text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else source
        data, tree, problems = parse(text)
        if problems:
            return ValidationReport(errors=problems)
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        return ValidationReport(errors=[Problem(DOCUMENT, f"the manifest is {kind}")])

    lines = Lines(tree)
    errors: list[Problem] = []
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        errors.extend(lines.at(*_shape_problem(e)) for e in exc.errors())

    sem_errors, warnings = check(data)
    errors.extend(lines.at(path, msg) for path, msg in sem_errors)
    return ValidationReport(
        errors=_unique(errors),
        warnings=_unique([lines.at(path, msg) for path, msg in warnings]),
        manifest=manifest if not errors else None,
    )


def validate_file(path: str | Path) -> ValidationReport:
    return validate(Path(path).read_text(encoding="utf-8"))


def load(source: str | bytes | Mapping[str, Any]) -> Manifest:
    """The manifest, or ManifestError listing every problem."""
    report = validate(source)
    if report.manifest is None:
        raise ManifestError(report)
    return report.manifest


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# -- shape ---------------------------------------------------------------------


def _shape_problem(err: Any) -> tuple[list[Segment], str]:
    segments, model = _walk(err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(segments[-1]) if segments else ""
        return segments, _unknown_field(name, model)
    return segments, _message(kind, ctx, err["msg"], err.get("input"))


def _message(kind: str, ctx: Mapping[str, Any], default: str, value: Any) -> str:
    simple = {
        "missing": "is required",
        "string_type": "must be a string",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "int_from_float": "must be a whole number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "string_too_short": "must not be empty",
        "union_tag_not_found": "a trait needs a `type`: spreadscaler, daemonscaler or link",
    }
    if kind in simple:
        return simple[kind]
    if kind == "greater_than_equal":
        return f"must be >= {ctx['ge']}"
    if kind == "greater_than":
        return f"must be > {ctx['gt']}"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else default
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {value!r})"
    if kind == "union_tag_invalid":
        return (
            f"unknown trait type {ctx['tag']!r}; expected one of: spreadscaler, daemonscaler, link"
        )
    if kind == "value_error":
        return str(ctx.get("error", default))
    return default


def _unknown_field(name: str, model: type[BaseModel] | None) -> str:
    if name in _HINTS:
        return f"unknown field: {_HINTS[name]}"
    allowed = _field_names(model) if model is not None else []
    close = difflib.get_close_matches(name, allowed, n=1)
    if close:
        return f"unknown field; did you mean {close[0]!r}?"
    if allowed:
        return f"unknown field; expected one of: {', '.join(allowed)}"
    return "unknown field"


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _walk(loc: tuple[Any, ...]) -> tuple[list[Segment], type[BaseModel] | None]:
    """Pydantic's location as path segments (discriminator tags dropped), and the model
    whose fields the last segment was looked up in."""
    ann: Any = Manifest
    out: list[Segment] = []
    owner: type[BaseModel] | None = None
    for seg in loc:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            owner = ann
            ann = _field_annotation(ann, seg)
            out.append(seg)
            continue
        variants = _union_variants(ann)
        tagged = next((v for v in variants if _tag(v) == seg), None)
        if tagged is not None:
            ann = tagged  # a discriminator tag in the location, not a path segment
            continue
        origin = typing.get_origin(ann)
        args = typing.get_args(ann)
        ann = args[0] if origin is list and args else args[1] if origin is dict and args else None
        out.append(seg)
    return out, owner


def _unwrap(ann: Any) -> Any:
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        variants = [a for a in _union_variants(ann) if a is not type(None)]
        if len(variants) == 1:
            ann = variants[0]
            continue
        return ann


def _union_variants(ann: Any) -> tuple[Any, ...]:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return typing.get_args(ann)
    return ()


def _tag(model: Any) -> str | None:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        args = typing.get_args(model.model_fields["type"].annotation)
        return args[0] if len(args) == 1 else None
    return None


def _field_annotation(model: type[BaseModel], seg: Any) -> Any:
    for name, info in model.model_fields.items():
        names = {name, info.alias}
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c for c in info.validation_alias.choices if isinstance(c, str))
        if seg in names:
            return info.annotation
    return None
