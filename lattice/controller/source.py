"""Manifest text → data, with the YAML node tree kept to find the line of any path.

JSON is parsed as JSON (its errors name line and column); anything else as YAML with
the safe loader. YAML syntax errors carry their line and column, and duplicate mapping
keys are reported (PyYAML alone would silently keep the last value). `Lines` maps a
path such as `spec.components[1].traits[0]` back to the line of that node.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import yaml

from lattice.controller.report import DOCUMENT, Problem, Segment, format_path, parse_path


def parse(text: str) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """(data, node tree or None, problems): data is None when there are problems."""
    if not text.strip():
        return None, None, [Problem(DOCUMENT, "the manifest is empty")]
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            return None, None, [Problem(DOCUMENT, f"invalid JSON: {exc.msg} ({where})", exc.lineno)]
        return data, _compose_quietly(text), []
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters at once
        return None, None, [Problem(DOCUMENT, f"invalid YAML: {exc}")]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None, [Problem(DOCUMENT, "the manifest is empty")]
        duplicates = list(_duplicate_keys(node, []))
        if duplicates:
            return None, node, duplicates
        return loader.construct_document(node), node, []
    except yaml.MarkedYAMLError as exc:
        return None, None, [_yaml_problem(exc)]
    except yaml.YAMLError as exc:
        return None, None, [Problem(DOCUMENT, f"invalid YAML: {exc}")]
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    what = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
    if mark is None:
        return Problem(DOCUMENT, f"invalid YAML: {what}")
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return Problem(DOCUMENT, f"invalid YAML: {what} ({where})", mark.line + 1)


def _compose_quietly(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _duplicate_keys(node: yaml.Node, path: list[Segment]) -> typing.Iterator[Problem]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in seen:
                    yield Problem(
                        format_path([*path, key.value]),
                        f"duplicate key (first on line {seen[key.value]}); "
                        "only one value can be kept",
                        line,
                    )
                seen.setdefault(key.value, line)
                yield from _duplicate_keys(value, [*path, key.value])
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, [*path, i])


class Lines:
    """Finds the line of a path in the composed YAML tree (None without a tree)."""

    def __init__(self, tree: yaml.Node | None) -> None:
        self.tree = tree

    def at(self, path: str | list[Segment], message: str) -> Problem:
        segments = parse_path(path) if isinstance(path, str) else path
        text = path if isinstance(path, str) else format_path(path)
        return Problem(text or DOCUMENT, message, self._line(segments))

    def _line(self, segments: list[Segment]) -> int | None:
        node = self.tree
        if node is None:
            return None
        line = node.start_mark.line + 1
        for seg in segments:
            nxt: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                nxt = next(
                    (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == seg),
                    None,
                )
            elif isinstance(node, yaml.SequenceNode) and isinstance(seg, int):
                nxt = node.value[seg] if 0 <= seg < len(node.value) else None
            if nxt is None:
                break
            node = nxt
            line = node.start_mark.line + 1
        return line
