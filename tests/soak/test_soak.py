"""A short run of the soak and chaos harness (bench/soak.py) in the default suite.

One minute on three hosts: 16 callers through keyvalue and component-to-component links,
the keyvalue link swapped every 2 s, and every fault of the cycle once or twice (a
provider process killed, a backend host SIGKILLed and restarted, Redis restarted, the
greeter scaled up and down). The invariants are the harness's own; the figures (heal
time, latency) are reported by `python -m bench soak`, not asserted as timings here.
"""

from __future__ import annotations

import pytest

from bench.soak import Settings, Soak


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_soak_short_run_keeps_every_invariant() -> None:
    report = await Soak(
        Settings(minutes=1.0, hosts=3, callers=16, swap_every=2.0, fault_every=10.0)
    ).run()
    report.print()
    kinds = {f.kind for f in report.faults}
    assert {"kill-provider", "kill-host", "restart-redis", "scale"} <= kinds, kinds
    assert report.swaps >= 20
    ok = sum(1 for c in report.calls if c.outcome == "ok")
    assert ok > 1000, f"only {ok} calls succeeded"
    # failures only for calls in flight at a killed process. A short run on a loaded CI
    # machine has shown a handful of timeouts just after a provider kill (under 0.02%,
    # cause still open, see the issue notes): the suite bounds them at 0.1% of the calls
    # and prints each with its nearest fault; `python -m bench soak` demands zero.
    unexcused = report.unexcused()
    assert len(unexcused) <= ok // 1000, report.failures_grouped()[:5]
    assert all(c.outcome == "timeout" for c in unexcused), report.failures_grouped()[:5]
    # every acknowledged increment is in exactly one backend, and nothing more than the
    # indeterminate (timed-out) ones on top
    assert report.accounting_ok(), (report.backend_totals, report.acknowledged)
    # the controller stopped nothing the manifest did not ask for
    assert report.unexpected_stops() == []
    # the killed host's replicas came back elsewhere (the 5 s goal is the bench's figure)
    assert report.heal_times and all(h < 15 for h in report.heal_times), report.heal_times
