"""A host's Prometheus metrics: plain counters on the hot path, read when scraped.

A call costs one dict lookup and a few integer increments here, with no lock: the
counters are touched on the event loop (served calls) or in worker threads (link
calls), and an `x += 1` on an attribute runs between the interpreter's switch points,
so concurrent increments are not lost in CPython. The Prometheus objects are only
built in `collect()`, at scrape time, from a registry of this host's own (never the
process-global one), so several hosts in one process each report their own numbers.

Cardinality is bounded: `source` comes from a caller's header and can be anything, so
each family keeps at most `MAX_SERIES` label sets; past that a new caller is counted
under `source="other"`, and past `MAX_SERIES + OVERFLOW` everything new folds into
one `other` series.

Metric names (also in docs/operations.md):
  lattice_host_invocations_total{component,function,source}
  lattice_host_invocation_errors_total{component,function,source,kind}
  lattice_host_invocation_duration_seconds{component,function,source}  (histogram)
  lattice_host_link_calls_total{source,link_name,target,function}
  lattice_host_link_call_errors_total{source,link_name,target,function,kind}
  lattice_host_instances_active / _warm / _max{component}
  lattice_host_loop_runs_total / _stops_total{component}
  lattice_host_compile_cache_total{result,source}
  lattice_host_provider_healthy{provider}, lattice_host_provider_restarts_total{provider}
  lattice_host_nats_connected, lattice_host_nats_reconnects_total
  lattice_host_info{host_id,lattice,version}
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

OTHER = "other"
MAX_SERIES = 1000
OVERFLOW = 200
# seconds; a warm call is tens of microseconds, a deadline is seconds
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)
BUCKETS += (1.0, 2.5, 5.0, 10.0)


class Series:
    """One label set: calls, errors by kind, and (for invocations) a duration histogram."""

    __slots__ = ("buckets", "calls", "errors", "total")

    def __init__(self) -> None:
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Family:
    """Label set → Series, capped (see the module's doc)."""

    def __init__(self, fold: Callable[[tuple[str, ...]], tuple[str, ...]]) -> None:
        self.series: dict[tuple[str, ...], Series] = {}
        self._fold = fold

    def get(self, key: tuple[str, ...]) -> Series:
        s = self.series.get(key)
        if s is not None:
            return s
        if len(self.series) >= MAX_SERIES:
            key = self._fold(key)
            s = self.series.get(key)
            if s is not None:
                return s
            if len(self.series) >= MAX_SERIES + OVERFLOW:
                key = tuple(OTHER for _ in key)
        return self.series.setdefault(key, Series())

    def items(self) -> list[tuple[tuple[str, ...], Series]]:
        return list(self.series.items())


def _fold_source(key: tuple[str, ...]) -> tuple[str, ...]:
    return (*key[:-1], OTHER)  # (component, function, source): the caller goes first


def _fold_link(key: tuple[str, ...]) -> tuple[str, ...]:
    source, _name, target, function = key
    return (source, OTHER, target, function)


class HostMetrics:
    """Counters a host's call path, link bridge and NATS callbacks bump; a collector."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.invocations = Family(_fold_source)
        self.link_calls = Family(_fold_link)
        self.nats_reconnects = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

    # -- hot path -------------------------------------------------------------

    def invoked(
        self, component: str, function: str, source: str, kind: str | None, seconds: float
    ) -> None:
        s = self.invocations.get((component, function, source))
        s.calls += 1
        s.buckets[bisect_left(BUCKETS, seconds)] += 1
        s.total += seconds
        if kind is not None:
            s.error(kind)

    def link_called(
        self, source: str, link_name: str, target: str, function: str, kind: str | None
    ) -> None:
        s = self.link_calls.get((source, link_name, target, function))
        s.calls += 1
        if kind is not None:
            s.error(kind)

    # -- scrape ---------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield from self._calls()
        yield from self._instances()
        yield from self._cache()
        yield from self._providers()
        h = self.host
        connected = GaugeMetricFamily("lattice_host_nats_connected", "1 while NATS is connected")
        connected.add_metric([], 1.0 if h.nc.is_connected else 0.0)
        yield connected
        re = CounterMetricFamily("lattice_host_nats_reconnects", "Reconnects to NATS")
        re.add_metric([], self.nats_reconnects)
        yield re
        info = GaugeMetricFamily("lattice_host_info", "This host", labels=["host_id", "lattice"])
        info.add_metric([h.host_id, h.lattice], 1.0)
        yield info

    def _calls(self) -> Iterator[Metric]:
        labels = ["component", "function", "source"]
        calls = CounterMetricFamily(
            "lattice_host_invocations",
            "Calls served, by component, function and caller",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "lattice_host_invocation_errors", "Calls that failed, by kind", labels=[*labels, "kind"]
        )
        dur = HistogramMetricFamily(
            "lattice_host_invocation_duration_seconds",
            "Time from accepting a call to its reply",
            labels=labels,
        )
        for key, s in self.invocations.items():
            calls.add_metric(list(key), s.calls)
            for kind, n in list(s.errors.items()):
                errors.add_metric([*key, kind], n)
            cumulative, acc = [], 0
            for bound, n in zip((*BUCKETS, float("inf")), s.buckets, strict=True):
                acc += n
                cumulative.append((repr(bound) if bound != float("inf") else "+Inf", acc))
            dur.add_metric(list(key), cumulative, s.total)
        link_labels = ["source", "link_name", "target", "function"]
        links = CounterMetricFamily(
            "lattice_host_link_calls", "Calls components made through links", labels=link_labels
        )
        link_errors = CounterMetricFamily(
            "lattice_host_link_call_errors",
            "Link calls that failed, by kind",
            labels=[*link_labels, "kind"],
        )
        for key, s in self.link_calls.items():
            links.add_metric(list(key), s.calls)
            for kind, n in list(s.errors.items()):
                link_errors.add_metric([*key, kind], n)
        yield from (calls, errors, dur, links, link_errors)

    def _instances(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "lattice_host_instances_active", "Instances running a call", labels=["component"]
        )
        warm = GaugeMetricFamily(
            "lattice_host_instances_warm", "Idle instances kept warm", labels=["component"]
        )
        cap = GaugeMetricFamily(
            "lattice_host_instances_max", "max_instances (the scale count)", labels=["component"]
        )
        loop_runs = CounterMetricFamily(
            "lattice_host_loop_runs",
            "Calls and HTTP exchanges run on the event loop (short ones that cannot wait)",
            labels=["component"],
        )
        loop_stops = CounterMetricFamily(
            "lattice_host_loop_stops",
            "Of those, stopped there (past the loop's budget, or about to wait) and run "
            "again on a worker",
            labels=["component"],
        )
        components = getattr(self.host, "components", None)
        for cid, rc in list(getattr(components, "running", {}).items()):
            pool = rc.pool
            active.add_metric([cid], min(pool.in_flight, pool.max_instances))
            warm.add_metric([cid], pool.warm)
            cap.add_metric([cid], pool.max_instances)
            loop_runs.add_metric([cid], pool.loop_runs)
            loop_stops.add_metric([cid], pool.loop_stops)
        yield from (active, warm, cap, loop_runs, loop_stops)

    def _cache(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(
            "lattice_host_compile_cache",
            "Compiled components obtained: hit (memory, disk, lattice) or miss (compiled)",
            labels=["result", "source"],
        )
        for source, n in list(self.host.cache.sources.items()):
            fam.add_metric(["miss" if source == "compiled" else "hit", source], n)
        yield fam

    def _providers(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "lattice_host_provider_healthy", "1 healthy, 0 not (or unknown)", labels=["provider"]
        )
        restarts = CounterMetricFamily(
            "lattice_host_provider_restarts", "Provider process restarts", labels=["provider"]
        )
        providers = getattr(self.host, "providers", None)
        for pid, rp in list(getattr(providers, "running", {}).items()):
            healthy.add_metric([pid], 1.0 if rp.healthy else 0.0)
            restarts.add_metric([pid], rp.restarts)
        yield from (healthy, restarts)
