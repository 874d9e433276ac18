"""Bench figures, run records and the arithmetic of comparing two runs (pure, no I/O
beyond reading and writing one JSON file).

A `Figure` is one measured value next to the baseline measured in the same run (raw
nats-py, a plain handler, plain aiohttp...), so a slower machine moves both and the ratio
stays comparable. A run record holds every figure of one `bench all` (or one bench) with
the commit and machine it ran on; `compare` pairs the figures of two records by key and
flags any value that moved more than `THRESHOLD` either way.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

THRESHOLD = 0.10  # a move beyond ±10 % is flagged
RUN_SCHEMA = 1

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    """One measurement. `better` says which direction is an improvement."""

    bench: str
    name: str
    value: float
    unit: str
    better: Better = "higher"
    baseline: float | None = None
    baseline_label: str = ""

    def __post_init__(self) -> None:
        if not self.bench or not self.name:
            raise ValueError("figure: bench and name must not be empty")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"figure {self.name!r}: better must be 'higher' or 'lower'")
        if not math.isfinite(self.value):
            raise ValueError(f"figure {self.name!r}: value must be finite, got {self.value}")

    @property
    def key(self) -> str:
        return f"{self.bench}: {self.name}"

    @property
    def ratio(self) -> float | None:
        """value / baseline (for `lower` figures too: 2.0 means twice the baseline)."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figure:
        try:
            return cls(
                bench=str(d["bench"]),
                name=str(d["name"]),
                value=float(d["value"]),
                unit=str(d.get("unit", "")),
                better=d.get("better", "higher"),
                baseline=None if d.get("baseline") is None else float(d["baseline"]),
                baseline_label=str(d.get("baseline_label", "")),
            )
        except KeyError as exc:
            raise ValueError(f"figure record lacks field {exc.args[0]!r}: {d!r}") from None


@dataclass
class Run:
    """Everything one bench run measured, and where."""

    id: str
    commit: str
    dirty: bool
    timestamp: str
    machine: dict[str, Any]
    figures: list[Figure]
    benches: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RUN_SCHEMA,
            "id": self.id,
            "commit": self.commit,
            "dirty": self.dirty,
            "timestamp": self.timestamp,
            "machine": self.machine,
            "benches": self.benches,
            "settings": self.settings,
            "figures": [f.to_dict() for f in self.figures],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        for name in ("id", "commit", "figures"):
            if name not in d:
                raise ValueError(f"run record lacks field {name!r}")
        return cls(
            id=str(d["id"]),
            commit=str(d["commit"]),
            dirty=bool(d.get("dirty", False)),
            timestamp=str(d.get("timestamp", "")),
            machine=dict(d.get("machine", {})),
            figures=[Figure.from_dict(f) for f in d["figures"]],
            benches=list(d.get("benches", [])),
            settings=dict(d.get("settings", {})),
        )

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.id}.json"
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return path


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def latency_figures(
    bench: str,
    what: str,
    samples: list[float],
    baseline: list[float],
    baseline_label: str,
    unit: Literal["µs", "ms"],
) -> list[Figure]:
    """`{what} p50` and `p99, one at a time`, each beside the baseline's (samples in s)."""
    scale = 1e6 if unit == "µs" else 1e3
    return [
        Figure(
            bench,
            f"{what} p{round(p * 100)}, one at a time",
            pct(samples, p) * scale,
            unit,
            "lower",
            pct(baseline, p) * scale,
            baseline_label,
        )
        for p in (0.5, 0.99)
    ]


def run_id(timestamp: str, commit: str, dirty: bool) -> str:
    """`20261201T231500Z-0559b77` (`-dirty` appended for uncommitted changes)."""
    stamp = "".join(c for c in timestamp if c.isalnum())[:15] + "Z"
    return f"{stamp}-{commit[:7]}{'-dirty' if dirty else ''}"


def load(ref: str, directory: Path) -> Run:
    """A run from a path, a run id, or a unique prefix of one, under `directory`."""
    path = Path(ref)
    if not path.is_file():
        candidates = sorted(directory.glob(f"{ref}*.json")) if directory.is_dir() else []
        if len(candidates) != 1:
            found = "no run" if not candidates else f"{len(candidates)} runs"
            raise ValueError(f"{ref!r}: {found} matches in {directory} (give a path or a run id)")
        path = candidates[0]
    try:
        return Run.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON run record: {exc}") from None


# -- comparing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One figure in two runs. `ratio` is b / a of the values, `baseline_ratio` the same
    for the figure's ratio to its baseline (machine noise mostly cancels there)."""

    key: str
    unit: str
    better: Better
    a: float | None
    b: float | None
    ratio: float | None
    baseline_ratio: float | None

    @property
    def flagged(self) -> bool:
        return self.ratio is not None and abs(self.ratio - 1) > THRESHOLD

    @property
    def verdict(self) -> str:
        """`slower`/`faster` style words for flagged changes, '' within the threshold."""
        if self.a is None:
            return "new"
        if self.b is None:
            return "gone"
        if not self.flagged or self.ratio is None:
            return ""
        improved = (self.ratio > 1) == (self.better == "higher")
        return "better" if improved else "WORSE"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def compare(a: Run, b: Run) -> list[Change]:
    """Every figure of either run, in the order of `a` then the ones only `b` has."""
    fa = {f.key: f for f in a.figures}
    fb = {f.key: f for f in b.figures}
    keys = list(fa) + [k for k in fb if k not in fa]
    out = []
    for k in keys:
        x, y = fa.get(k), fb.get(k)
        ref = x or y
        assert ref is not None
        out.append(
            Change(
                key=k,
                unit=ref.unit,
                better=ref.better,
                a=x.value if x else None,
                b=y.value if y else None,
                ratio=_ratio(x.value if x else None, y.value if y else None),
                baseline_ratio=_ratio(x.ratio if x else None, y.ratio if y else None),
            )
        )
    return out


# -- formatting -----------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    """A value with its unit, at a precision that suits the unit."""
    if value is None:
        return ""
    if unit in ("calls/s", "requests/s", "B"):
        return f"{value:,.0f} {unit}"
    if unit in ("µs", "ms"):
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    if unit in ("s", "MiB"):
        return f"{value:.2f} {unit}"
    return f"{value:.3g} {unit}".strip()


def fmt_ratio(r: float | None) -> str:
    return "" if r is None else f"{r:.2f}×"
