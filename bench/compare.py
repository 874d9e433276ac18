"""`python -m bench compare A B`: how every figure moved from run A to run B.

A and B are paths to run records or run ids (a unique prefix will do) under
`.bench-results/`. For each figure it prints both values, B / A, and B / A of the
figure's ratio to its same-run baseline (machine noise mostly cancels in that column);
moves beyond ±10 % are flagged better or WORSE. Exits 1 when any figure got worse.
"""

from __future__ import annotations

import argparse

from rich.table import Table

from bench.all import console, results_dir
from bench.results import THRESHOLD, Change, compare, fmt, fmt_ratio, load


def table(changes: list[Change], title: str) -> Table:
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("A", justify="right")
    t.add_column("B", justify="right")
    t.add_column("B / A", justify="right")
    t.add_column("B / A vs baseline", justify="right")
    t.add_column(f"beyond ±{THRESHOLD:.0%}")
    for c in changes:
        verdict = c.verdict
        style = {"WORSE": "bold red", "better": "green"}.get(verdict, "")
        t.add_row(
            c.key,
            fmt(c.a, c.unit),
            fmt(c.b, c.unit),
            fmt_ratio(c.ratio),
            fmt_ratio(c.baseline_ratio),
            verdict,
            style=style or None,
        )
    return t


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench compare")
    ap.add_argument("a", help="the earlier run: a path or a run id under .bench-results/")
    ap.add_argument("b", help="the later run")
    args = ap.parse_args(argv)
    try:
        a, b = load(args.a, results_dir()), load(args.b, results_dir())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    changes = compare(a, b)
    console().print(table(changes, f"A = {a.id}   B = {b.id}"))
    for run, name in ((a, "A"), (b, "B")):
        m = run.machine
        print(
            f"{name}: {run.commit[:10]}{' dirty' if run.dirty else ''}  {run.timestamp}  "
            f"load {m.get('load_average')}  {m.get('cpu', '')}"
        )
    if any(c.verdict == "WORSE" for c in changes):
        raise SystemExit(1)
