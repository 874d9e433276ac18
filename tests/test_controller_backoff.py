"""Backoff policy and failure records: pure, with an injected random source."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lattice.controller.backoff import Backoff, record_failure, record_success, waiting

KEY = ("component", "h1", "app-web")


def test_delays_double_up_to_the_cap() -> None:
    policy = Backoff(base=1.0, factor=2.0, cap=30.0, jitter=0.0)
    assert [policy.delay(n, lambda: 0.5) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.ceiling(10_000) == 30.0  # no overflow


def test_jitter_comes_from_the_injected_source() -> None:
    policy = Backoff(base=2.0, cap=60.0, jitter=0.5)
    assert policy.delay(3, lambda: 0.0) == 8.0
    assert policy.delay(3, lambda: 0.999) == pytest.approx(4.004)
    with pytest.raises(ValueError):
        policy.delay(1, lambda: 1.0)
    with pytest.raises(ValueError):
        policy.delay(0, lambda: 0.0)


@pytest.mark.parametrize(
    "kw", [{"base": 0}, {"factor": 0.5}, {"cap": 0.1, "base": 1}, {"jitter": 1.5}]
)
def test_nonsense_policies_are_refused(kw: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kw)


@given(attempt=st.integers(1, 200), r=st.floats(0, 1, exclude_max=True))
def test_delay_is_within_bounds(attempt: int, r: float) -> None:
    policy = Backoff(base=0.5, factor=3.0, cap=45.0, jitter=0.25)
    d = policy.delay(attempt, lambda: r)
    ceiling = policy.ceiling(attempt)
    assert 0.75 * ceiling <= d <= ceiling <= 45.0


def test_failure_records_count_and_clear() -> None:
    policy = Backoff(base=1.0, cap=10.0, jitter=0.0)
    failures = record_failure({}, KEY, "no such file", now=100.0, policy=policy, rand=lambda: 0)
    failures = record_failure(
        failures, KEY, "still no file", now=101.0, policy=policy, rand=lambda: 0
    )
    f = failures[KEY]
    assert (f.attempts, f.error, f.since, f.retry_at) == (2, "still no file", 100.0, 103.0)
    assert waiting(failures, KEY, 102.9) is f
    assert waiting(failures, KEY, 103.0) is None
    assert record_success(failures, KEY) == {}
