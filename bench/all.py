"""`python -m bench all`: invoke, provider, links and http in one go, one table, one JSON record.

Every figure is printed next to the baseline measured in the same run, and the whole run
is written to `.bench-results/<id>.json` (untracked: figures belong to a machine) with
the commit, whether the work tree had uncommitted changes, and the machine's facts.
Durations are moderate so the run takes a few minutes on a 2-core machine; `--quick`
shortens them further for a smoke run. Compare two runs with `python -m bench compare`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.results import Figure, Run, fmt, fmt_ratio, run_id

ROOT = Path(__file__).resolve().parent.parent
RESULTS_ENV = "LATTICE_BENCH_RESULTS"

# bench -> the arguments `bench all` runs it with (each bench's defaults are longer)
PLAN: dict[str, list[str]] = {
    "invoke": ["--calls", "1000", "--total", "6000"],
    "provider": ["--calls", "500", "--total", "3000"],
    "links": ["--calls", "300", "--total", "1000"],
    "http": ["--requests", "500", "--total", "3000", "--echoes", "3"],
}
QUICK: dict[str, list[str]] = {
    "invoke": ["--calls", "200", "--total", "1000"],
    "provider": ["--calls", "100", "--total", "500"],
    "links": ["--calls", "50", "--total", "200"],
    "http": ["--requests", "100", "--total", "500", "--echoes", "1"],
}


def results_dir() -> Path:
    override = os.environ.get(RESULTS_ENV)
    return Path(override) if override else ROOT / ".bench-results"


def _run(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def git_state() -> tuple[str, bool]:
    """HEAD's hash and whether tracked files differ from it."""
    commit = _run(["git", "rev-parse", "HEAD"]) or "unknown"
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"]))
    return commit, dirty


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    from lattice import natsd

    try:
        nats_server = _run([natsd.find_binary(), "--version"])
    except Exception:
        nats_server = ""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wasmtime": _version("wasmtime"),
        "nats_py": _version("nats-py"),
        "nats_server": nats_server,
        "componentize_py": _version("componentize-py"),
    }


def new_run(
    benches: list[str], figures: list[Figure], settings: dict[str, Any], machine: dict[str, Any]
) -> Run:
    """A run record for figures measured just now; `machine` is read before the run
    starts, so its load average is the one the run began with."""
    commit, dirty = git_state()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    what = "all" if benches == list(PLAN) else "-".join(benches)
    return Run(
        id=f"{run_id(stamp, commit, dirty)}-{what}",
        commit=commit,
        dirty=dirty,
        timestamp=stamp,
        machine=machine,
        figures=figures,
        benches=benches,
        settings=settings,
    )


def table(figures: list[Figure], title: str = "") -> Table:
    t = Table(title=title or None, show_lines=False)
    t.add_column("figure")
    t.add_column("baseline (same run)")
    t.add_column("lattice", justify="right")
    t.add_column("ratio", justify="right")
    bench = None
    for f in figures:
        if bench is not None and f.bench != bench:
            t.add_section()
        bench = f.bench
        base = f"{f.baseline_label} {fmt(f.baseline, f.unit)}" if f.baseline is not None else ""
        t.add_row(f.key, base, fmt(f.value, f.unit), fmt_ratio(f.ratio))
    return t


def console() -> Console:
    """Wide enough for the figure names when the output is not a terminal (a log, a pipe)."""
    c = Console()
    return c if c.is_terminal else Console(width=150)


def report(
    bench: str, figures: list[Figure], settings: dict[str, Any], machine: dict[str, Any]
) -> Path:
    """Print one bench's figures and save them as a run of that bench alone."""
    run = new_run([bench], figures, {"args": {bench: settings}}, machine)
    console().print(table(figures, f"bench {bench}"))
    path = run.save(results_dir())
    print(f"saved {path}")
    return path


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench all")
    ap.add_argument("--quick", action="store_true", help="shorter runs, for a smoke check")
    ap.add_argument(
        "--only", default=",".join(PLAN), help=f"comma-separated subset of {','.join(PLAN)}"
    )
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else PLAN
    benches = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in benches if b not in PLAN]
    if unknown:
        raise SystemExit(f"--only: unknown bench(es) {unknown}; known: {', '.join(PLAN)}")
    facts = machine_facts()
    started = time.perf_counter()
    figures: list[Figure] = []
    used: dict[str, Any] = {}
    for name in benches:
        mod = importlib.import_module(f"bench.{name}")
        bench_args = mod.parser().parse_args(plan[name])
        used[name] = vars(bench_args)
        t = time.perf_counter()
        print(f"bench {name} …", file=sys.stderr, flush=True)
        figures += await mod.measure(bench_args)
        print(f"bench {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    run = new_run(
        benches,
        figures,
        {"args": used, "quick": args.quick, "duration_s": round(time.perf_counter() - started, 1)},
        facts,
    )
    console().print(
        table(figures, f"bench all · {run.commit[:7]}{' (dirty)' if run.dirty else ''}")
    )
    print(f"saved {run.save(results_dir())}")
