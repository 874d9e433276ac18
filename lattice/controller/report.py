"""What validation reports: problems with a path, a reason and (for text) a line.

A path is written the way people read a manifest: `spec.components[2].traits[0]`;
`<document>` stands for the manifest as a whole (a syntax error, an empty file).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lattice.controller.manifest import Manifest

DOCUMENT = "<document>"

Segment = str | int


@dataclass(frozen=True)
class Problem:
    """One finding: where (`path`, and `line` when the source was text) and why."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path} (line {self.line})"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ValidationReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """One line per problem, errors first; what `lattice app validate` prints."""
        lines = [f"error: {p}" for p in self.errors] + [f"warning: {p}" for p in self.warnings]
        return "\n".join(lines)


class ManifestError(ValueError):
    """A manifest that cannot be deployed; `report` holds every problem."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.format())
        self.report = report


def format_path(segments: list[Segment]) -> str:
    """`['spec', 'components', 2, 'name']` → `spec.components[2].name`."""
    out = ""
    for seg in segments:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def parse_path(path: str) -> list[Segment]:
    """The inverse of `format_path`."""
    out: list[Segment] = []
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out
