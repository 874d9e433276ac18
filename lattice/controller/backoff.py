"""Retrying failed commands: exponential backoff with jitter, as pure values.

The command worker records each failure under the command's `key` (a host refused a
scale, a `component_scale_failed` event, a link put refused for a missing config):

    failures = record_failure(failures, cmd.key, error, now=now, policy=policy, rand=rng.random)

and clears it on success (`record_success`). The planner gets the map: a command whose
key has `retry_at > now` is held back (the plan lists it in `withheld`), a host where a
component failed to start is not chosen for new replicas while it waits, and once
`attempts` reaches the planner's `failed_after` the status turns `failed` with the
error. Retries never stop; they settle at the cap, so nothing loops fast.

The delay for attempt n is `min(cap, base * factor**(n-1))`, then reduced by up to
`jitter` of itself with the injected random source (`rand() in [0, 1)`), so controllers
that failed together do not retry together, and tests choose the randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lattice.controller.commands import CommandKey


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    jitter: float = 0.5  # the delay is drawn from [d * (1 - jitter), d]

    def __post_init__(self) -> None:
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction between 0 and 1")

    def ceiling(self, attempt: int) -> float:
        """The delay before jitter for the `attempt`-th failure (1-based)."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        try:
            return min(self.cap, self.base * self.factor ** (attempt - 1))
        except OverflowError:
            return self.cap

    def delay(self, attempt: int, rand: Callable[[], float]) -> float:
        r = rand()
        if not 0 <= r < 1:
            raise ValueError(f"rand() must return a number in [0, 1), got {r}")
        return self.ceiling(attempt) * (1 - self.jitter * r)


@dataclass(frozen=True)
class Failure:
    attempts: int
    error: str
    retry_at: float
    since: float  # when the first of these failures happened


def record_failure(
    failures: Mapping[CommandKey, Failure],
    key: CommandKey,
    error: str,
    *,
    now: float,
    policy: Backoff,
    rand: Callable[[], float],
) -> dict[CommandKey, Failure]:
    """A new map with one more failure for `key`."""
    previous = failures.get(key)
    attempts = previous.attempts + 1 if previous else 1
    since = previous.since if previous else now
    retry_at = now + policy.delay(attempts, rand)
    return {**failures, key: Failure(attempts, error, retry_at, since)}


def record_success(
    failures: Mapping[CommandKey, Failure], key: CommandKey
) -> dict[CommandKey, Failure]:
    return {k: f for k, f in failures.items() if k != key}


def waiting(failures: Mapping[CommandKey, Failure], key: CommandKey, now: float) -> Failure | None:
    """The failure that still holds `key` back at `now`, if any."""
    f = failures.get(key)
    return f if f is not None and f.retry_at > now else None
