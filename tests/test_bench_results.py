"""bench/results.py: figure records, run records and the arithmetic of `bench compare`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results import THRESHOLD, Figure, Run, compare, fmt, fmt_ratio, load, run_id


def fig(name: str, value: float, baseline: float | None = None, better: str = "higher") -> Figure:
    return Figure("invoke", name, value, "calls/s", better, baseline, "raw")  # type: ignore[arg-type]


def run(rid: str, *figures: Figure) -> Run:
    return Run(rid, "abc1234def", False, "2026-12-01T23:15:00Z", {"cores": 2}, list(figures))


def test_a_figure_knows_its_ratio_to_the_baseline() -> None:
    assert fig("tp", 3000, 12000).ratio == pytest.approx(0.25)
    assert fig("tp", 3000).ratio is None
    assert fig("tp", 3000, 0).ratio is None
    assert fig("tp", 1).key == "invoke: tp"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"better": "sideways"}, "better"),
        ({"value": float("nan")}, "finite"),
        ({"name": ""}, "name"),
    ],
)
def test_a_bad_figure_is_refused_naming_the_field(kwargs: dict, field: str) -> None:
    base = {"bench": "invoke", "name": "tp", "value": 1.0, "unit": "calls/s"}
    with pytest.raises(ValueError, match=field):
        Figure(**{**base, **kwargs})


def test_a_run_round_trips_through_json(tmp_path: Path) -> None:
    r = run("20261201T231500Z-abc1234-all", fig("tp", 3000, 12000), fig("p50", 900, 700, "lower"))
    path = r.save(tmp_path)
    assert path.name == "20261201T231500Z-abc1234-all.json"
    stored = json.loads(path.read_text())
    assert stored["figures"][0]["ratio"] == pytest.approx(0.25)
    back = load(str(path), tmp_path)
    assert back.figures == r.figures and back.commit == r.commit and back.machine == {"cores": 2}


def test_load_by_id_prefix_and_clear_errors(tmp_path: Path) -> None:
    run("20261201T231500Z-abc1234-all").save(tmp_path)
    run("20261201T232000Z-def5678-all").save(tmp_path)
    assert load("20261201T2315", tmp_path).id == "20261201T231500Z-abc1234-all"
    with pytest.raises(ValueError, match="2 runs match"):
        load("20261201", tmp_path)
    with pytest.raises(ValueError, match="no run matches"):
        load("nope", tmp_path)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not a JSON run record"):
        load(str(tmp_path / "broken.json"), tmp_path)
    (tmp_path / "partial.json").write_text('{"id": "x", "commit": "y"}')
    with pytest.raises(ValueError, match="'figures'"):
        load(str(tmp_path / "partial.json"), tmp_path)


def test_run_id_names_time_commit_and_dirt() -> None:
    assert run_id("2026-12-01T23:15:00Z", "0559b77138e1", False) == "20261201T231500Z-0559b77"
    assert run_id("2026-12-01T23:15:00Z", "0559b77138e1", True) == "20261201T231500Z-0559b77-dirty"


def test_compare_flags_moves_beyond_the_threshold_by_direction() -> None:
    a = run(
        "a",
        fig("tp", 3000, 12000),
        fig("steady", 1000, 1000),
        fig("p50", 1000, 500, "lower"),
        fig("old only", 5),
    )
    b = run(
        "b",
        fig("tp", 6000, 12000),  # twice as many calls/s: better
        fig("steady", 1000 * (1 + THRESHOLD * 0.9), 1000),  # within ±10 %
        fig("p50", 1200, 500, "lower"),  # 20 % slower: worse
        fig("new only", 7),
    )
    changes = {c.key: c for c in compare(a, b)}
    assert list(changes) == [
        "invoke: tp",
        "invoke: steady",
        "invoke: p50",
        "invoke: old only",
        "invoke: new only",
    ]
    tp = changes["invoke: tp"]
    assert tp.ratio == pytest.approx(2.0) and tp.baseline_ratio == pytest.approx(2.0)
    assert tp.flagged and tp.verdict == "better"
    assert not changes["invoke: steady"].flagged and changes["invoke: steady"].verdict == ""
    p50 = changes["invoke: p50"]
    assert p50.ratio == pytest.approx(1.2) and p50.verdict == "WORSE"
    assert changes["invoke: old only"].verdict == "gone"
    assert changes["invoke: new only"].verdict == "new"
    assert changes["invoke: new only"].ratio is None


def test_baseline_ratio_cancels_a_slower_machine() -> None:
    # both sides 30 % slower: the value moved, its ratio to the baseline did not
    a = run("a", fig("tp", 3000, 12000))
    b = run("b", fig("tp", 2100, 8400))
    (c,) = compare(a, b)
    assert c.verdict == "WORSE" and c.baseline_ratio == pytest.approx(1.0)


def test_formatting_by_unit() -> None:
    assert fmt(12345.6, "calls/s") == "12,346 calls/s"
    assert fmt(218.4, "µs") == "218 µs"
    assert fmt(61.25, "µs") == "61.2 µs"
    assert fmt(0.1349, "s") == "0.13 s"
    assert fmt(None, "s") == ""
    assert fmt_ratio(0.2449) == "0.24×" and fmt_ratio(None) == ""


def test_latency_figures_keep_the_names_earlier_runs_used() -> None:
    from bench.results import latency_figures

    got = latency_figures("http", "GET /", [0.001, 0.002, 0.004], [0.0005, 0.001], "plain", "ms")
    assert [(f.name, f.value, f.baseline) for f in got] == [
        ("GET / p50, one at a time", 2.0, 1.0),
        ("GET / p99, one at a time", 4.0, 1.0),
    ]
    assert all(f.better == "lower" and f.unit == "ms" for f in got)


def test_bench_ab_flips_who_goes_first_and_takes_medians_against_the_base() -> None:
    from bench.ab import block_order, figures

    assert block_order(["base", "new"], 0) == ["base", "new"]
    assert block_order(["base", "new"], 1) == ["new", "base"]
    samples = {
        "main": {"calls/s": [10.0, 30.0, 20.0], "CPU": [50.0, 40.0, 60.0], "p50": []},
        "this checkout": {"calls/s": [15.0, 25.0, 35.0], "CPU": [30.0, 20.0, 40.0], "p50": []},
    }
    got = {f.name: f for f in figures("invoke", "echo_min", samples, "main", "this checkout")}
    rate = got["invoke calls/s, in flight (echo_min), alternating blocks"]
    assert (rate.value, rate.baseline, rate.baseline_label) == (25.0, 20.0, "main")
    cpu = got["invoke host CPU per call, in flight (echo_min), alternating blocks"]
    assert (cpu.value, cpu.baseline, cpu.better, cpu.unit) == (30.0, 50.0, "lower", "µs")
    assert len(got) == 2  # no p50 blocks: no p50 figure


def test_bench_ab_names_http_figures_per_request_and_refuses_a_guest_that_does_not_fit() -> None:
    from bench.ab import figures, guest_of

    samples = {
        "main": {"calls/s": [100.0], "CPU": [300.0], "p50": [700.0]},
        "this checkout": {"calls/s": [150.0], "CPU": [200.0], "p50": [600.0]},
    }
    got = {f.name: f for f in figures("http", "hello_min", samples, "main", "this checkout")}
    rate = got["http requests/s, in flight (hello_min), alternating blocks"]
    assert (rate.value, rate.unit, rate.baseline) == (150.0, "requests/s", 100.0)
    assert "http host CPU per request, in flight (hello_min), alternating blocks" in got
    assert (guest_of("http", None), guest_of("invoke", None)) == ("hello_min", "echo_min")
    assert guest_of("provider", None) == "counter_min"
    with pytest.raises(SystemExit, match="--guest echo does not apply to --what http"):
        guest_of("http", "echo")
    with pytest.raises(SystemExit, match="does not apply to --what provider"):
        guest_of("provider", "hello_min")
