"""A controller's Prometheus metrics, in a registry of its own.

  lattice_controller_app_desired_instances{app}   instances the deployed manifest asks for
  lattice_controller_app_running_instances{app}   instances the lattice runs for it now
  lattice_controller_app_components{app,state}    manifest components by status state
  lattice_controller_reconcile_duration_seconds   one reconcile round (histogram)
  lattice_controller_reconcile_errors_total       rounds that failed
  lattice_controller_leader                       1 on the replica holding the lease

The app gauges are read from the statuses the controller last published, so a standby
replica (which does not reconcile) reports none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControllerMetrics:
    def __init__(self, controller: Any) -> None:
        self.controller = controller
        self.registry = CollectorRegistry(auto_describe=False)
        self.reconcile = Histogram(
            "lattice_controller_reconcile_duration_seconds",
            "One reconcile round: plan and send the commands",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "lattice_controller_reconcile_errors",
            "Reconcile rounds that failed",
            registry=self.registry,
        )
        self.registry.register(self)  # type: ignore[arg-type]

    def collectors(self) -> tuple[Any, ...]:
        """Everything this exports, to add to another registry (a host's, when the
        controller runs inside `lattice up`)."""
        return (self, self.reconcile, self.reconcile_errors)

    def collect(self) -> Iterator[Metric]:
        desired = GaugeMetricFamily(
            "lattice_controller_app_desired_instances",
            "Instances the deployed manifest asks for",
            labels=["app"],
        )
        running = GaugeMetricFamily(
            "lattice_controller_app_running_instances",
            "Instances running for the app now",
            labels=["app"],
        )
        states = GaugeMetricFamily(
            "lattice_controller_app_components",
            "Manifest components by status state",
            labels=["app", "state"],
        )
        for name, status in list(self.controller._statuses.items()):
            comps = status.get("components") or []
            desired.add_metric([name], sum(int(c.get("desired", 0)) for c in comps))
            running.add_metric([name], sum(int(c.get("running", 0)) for c in comps))
            counts: dict[str, int] = {}
            for c in comps:
                counts[str(c.get("state"))] = counts.get(str(c.get("state")), 0) + 1
            for state, n in sorted(counts.items()):
                states.add_metric([name, state], n)
        leader = GaugeMetricFamily("lattice_controller_leader", "1 while holding the lease")
        lease = getattr(self.controller, "lease", None)
        leader.add_metric([], 1.0 if lease is not None and lease.is_leader else 0.0)
        yield from (desired, running, states, leader)
