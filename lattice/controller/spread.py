"""Spread arithmetic: splitting a count over weighted rules, and over hosts.

`largest_remainder(total, weights)` is Hamilton's method: each rule gets the floor of
its exact quota `total * w / sum(w)`, and the seats left over go to the largest
remainders. So 80/20 of 4 is 3/1 (quotas 3.2/0.8), not 4/0 as rounding each quota down
and giving the rest to the first rule would; 1/1/1 of 10 is 4/3/3. Every share is
within 1 of its exact quota and the shares always add up to `total`. Ties between equal
remainders go to the larger weight, then to the earlier rule. Integer arithmetic only.

Within a rule, a count is split over the rule's hosts in one of two ways:

- `fill` (the default, sticky): keep what already runs where it runs; add missing
  instances to the hosts with the fewest (ties: smallest host id), remove surplus from
  the hosts with the most (ties: largest host id). A host that joins gets nothing until
  something is missing.
- `even` (`rebalance: true`): every host gets `total // n` or one more; the extra ones
  stay on hosts that already have the most (ties: smallest host id), so nothing moves
  once the split is even.

Both are idempotent: applied to their own result they return it unchanged.
`choose_hosts` does the same for providers, which run at most once per host.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` over `weights` by largest remainder; raises when no weight is > 0."""
    if total < 0:
        raise ValueError("total must be >= 0")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    whole = sum(weights)
    if whole == 0:
        if total == 0:
            return [0] * len(weights)
        raise ValueError("the weights add up to 0")
    shares = [total * w // whole for w in weights]
    remainders = [total * w % whole for w in weights]
    left = total - sum(shares)
    ranked = sorted(range(len(weights)), key=lambda i: (-remainders[i], -weights[i], i))
    for i in ranked[:left]:
        shares[i] += 1
    return shares


def fill(total: int, hosts: Sequence[str], current: Mapping[str, int]) -> dict[str, int]:
    """`total` over `hosts`, keeping `current` counts where possible (sticky)."""
    if not hosts:
        return {}
    order = sorted(hosts)
    counts = [max(0, current.get(h, 0)) for h in order]
    have = sum(counts)
    if have < total:  # add one at a time to the (fewest, smallest id)
        low = [(c, i) for i, c in enumerate(counts)]
        heapq.heapify(low)
        for _ in range(total - have):
            c, i = heapq.heappop(low)
            counts[i] = c + 1
            heapq.heappush(low, (c + 1, i))
    elif have > total:  # remove one at a time from the (most, largest id)
        high = [(-c, -i) for i, c in enumerate(counts)]
        heapq.heapify(high)
        for _ in range(have - total):
            c, i = heapq.heappop(high)
            counts[-i] = -c - 1
            heapq.heappush(high, (c + 1, i))
    return dict(zip(order, counts, strict=True))


def even(total: int, hosts: Sequence[str], current: Mapping[str, int]) -> dict[str, int]:
    """`total` split evenly over `hosts`; the remainder stays where most already run."""
    if not hosts:
        return {}
    base, extra = divmod(total, len(hosts))
    ranked = sorted(hosts, key=lambda h: (-current.get(h, 0), h))
    return {h: base + (1 if i < extra else 0) for i, h in enumerate(ranked)}


def choose_hosts(n: int, hosts: Sequence[str], current: set[str] | frozenset[str]) -> list[str]:
    """`n` of `hosts` (at most all), keeping current ones first, then by host id."""
    ranked = sorted(hosts, key=lambda h: (h not in current, h))
    return sorted(ranked[: max(0, n)])
