"""Spread arithmetic and placement: largest remainder, per-host splits, scalers."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lattice.controller.desired import Rule, Scaler, Workload
from lattice.controller.scalers import place
from lattice.controller.snapshot import HostSnapshot
from lattice.controller.spread import choose_hosts, even, fill, largest_remainder

# -- largest remainder -----------------------------------------------------------------


@pytest.mark.parametrize(
    "total, weights, shares",
    [
        (4, [80, 20], [3, 1]),  # not 4/0: quotas 3.2 / 0.8
        (10, [1, 1, 1], [4, 3, 3]),
        (10, [80, 20], [8, 2]),
        (5, [50, 50], [3, 2]),  # a tie goes to the earlier rule
        (1, [1, 3], [0, 1]),
        (3, [2, 1, 1], [1, 1, 1]),  # quotas 1.5/.75/.75: the two largest remainders win
        (7, [0, 1, 1], [0, 4, 3]),
        (0, [80, 20], [0, 0]),
        (0, [0, 0], [0, 0]),
        (6, [100], [6]),
        (2, [1, 1, 1, 1], [1, 1, 0, 0]),
    ],
)
def test_largest_remainder_examples(total: int, weights: list[int], shares: list[int]) -> None:
    assert largest_remainder(total, weights) == shares


def test_remainder_ties_prefer_larger_weight_then_earlier_rule() -> None:
    assert largest_remainder(2, [1, 3]) == [0, 2]  # quotas .5/1.5, equal remainders
    assert largest_remainder(1, [1, 1]) == [1, 0]
    assert largest_remainder(1, [1, 2, 2]) == [0, 1, 0]


def test_weights_summing_to_zero_are_refused() -> None:
    with pytest.raises(ValueError, match="add up to 0"):
        largest_remainder(3, [0, 0])
    with pytest.raises(ValueError):
        largest_remainder(-1, [1])
    with pytest.raises(ValueError):
        largest_remainder(1, [-1, 2])


@given(
    total=st.integers(0, 500),
    weights=st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(lambda w: sum(w) > 0),
)
def test_shares_add_up_and_stay_within_one_of_the_quota(total: int, weights: list[int]) -> None:
    shares = largest_remainder(total, weights)
    assert sum(shares) == total
    whole = sum(weights)
    for share, w in zip(shares, weights, strict=True):
        quota = Fraction(total * w, whole)
        assert abs(share - quota) < 1
        assert share >= 0
        if w == 0:
            assert share == 0


@given(
    total=st.integers(0, 200),
    weights=st.lists(st.integers(1, 100), min_size=2, max_size=6),
)
def test_more_instances_never_take_a_share_away_for_equal_weights(
    total: int, weights: list[int]
) -> None:
    equal = [weights[0]] * len(weights)
    before, after = largest_remainder(total, equal), largest_remainder(total + 1, equal)
    assert all(a >= b for a, b in zip(after, before, strict=True))


# -- splitting over hosts --------------------------------------------------------------

hosts_st = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5, unique=True)
current_st = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e", "z"]), st.integers(0, 9))


def test_fill_keeps_what_runs_and_adds_to_the_fewest() -> None:
    assert fill(4, ["a", "b", "c"], {}) == {"a": 2, "b": 1, "c": 1}
    assert fill(4, ["a", "b", "c"], {"c": 4}) == {"a": 0, "b": 0, "c": 4}  # sticky
    assert fill(5, ["a", "b", "c"], {"c": 3}) == {"a": 1, "b": 1, "c": 3}
    assert fill(2, ["a", "b", "c"], {"a": 2, "c": 2}) == {"a": 1, "b": 0, "c": 1}
    assert fill(3, [], {"a": 1}) == {}


def test_even_splits_and_keeps_the_remainder_where_it_is() -> None:
    assert even(5, ["a", "b", "c"], {}) == {"a": 2, "b": 2, "c": 1}
    assert even(5, ["a", "b", "c"], {"c": 5}) == {"c": 2, "a": 2, "b": 1}
    assert even(6, ["a", "b", "c"], {"a": 6}) == {"a": 2, "b": 2, "c": 2}


@given(total=st.integers(0, 60), hosts=hosts_st, current=current_st)
def test_fill_is_idempotent_and_exact(total: int, hosts: list[str], current: dict) -> None:
    once = fill(total, hosts, current)
    assert sum(once.values()) == total
    assert set(once) == set(hosts)
    assert fill(total, hosts, once) == once
    mine = {h: current.get(h, 0) for h in hosts}
    if sum(mine.values()) == total:
        assert once == mine  # nothing moves when nothing is missing


@given(total=st.integers(0, 60), hosts=hosts_st, current=current_st)
def test_even_is_idempotent_and_balanced(total: int, hosts: list[str], current: dict) -> None:
    once = even(total, hosts, current)
    assert sum(once.values()) == total
    assert max(once.values()) - min(once.values()) <= 1
    assert even(total, hosts, once) == once


@given(n=st.integers(0, 6), hosts=hosts_st, current=st.sets(st.sampled_from("abcdez")))
def test_choose_hosts_is_sticky_and_idempotent(n: int, hosts: list[str], current: set) -> None:
    chosen = choose_hosts(n, hosts, current)
    assert len(chosen) == min(n, len(hosts))
    assert set(chosen) <= set(hosts)
    assert choose_hosts(n, hosts, set(chosen)) == chosen
    kept = [h for h in hosts if h in current]
    if len(kept) <= n:
        assert set(kept) <= set(chosen)


# -- scalers ---------------------------------------------------------------------------


def hosts(**labels: dict[str, str]) -> dict[str, HostSnapshot]:
    return {h: HostSnapshot(h, lbl) for h, lbl in labels.items()}


LAB = hosts(
    h1={"zone": "east", "gpu": "yes"},
    h2={"zone": "east"},
    h3={"zone": "west"},
)


def workload(scaler: Scaler, kind: str = "component") -> Workload:
    return Workload("app", "w", kind, "app-w", "file:///w.wasm", (), scaler, False)  # type: ignore[arg-type]


EAST, WEST = Rule("east", {"zone": "east"}, 80), Rule("west", {"zone": "west"}, 20)


def test_weighted_spread_80_20_of_4() -> None:
    p = place(workload(Scaler("spread", 4, (EAST, WEST))), LAB, {})
    assert p.targets == {"h1": 2, "h2": 1, "h3": 1}
    assert p.desired == 4 and not p.failures


def test_weighted_spread_of_10() -> None:
    p = place(workload(Scaler("spread", 10, (EAST, WEST))), LAB, {})
    assert p.targets == {"h1": 4, "h2": 4, "h3": 2}


def test_rule_without_host_fails_and_keeps_its_share() -> None:
    gpu_west = Rule("gpu-west", {"zone": "west", "gpu": "yes"}, 50)
    p = place(workload(Scaler("spread", 4, (EAST, gpu_west))), LAB, {})
    assert sum(p.targets.values()) == 2  # east's share only; west's is not moved
    (reason,) = p.failures
    assert "gpu-west" in reason and "gpu=yes" in reason and "zone=west" in reason
    assert "label" in reason


def test_zero_instances_place_nothing() -> None:
    assert place(workload(Scaler("spread", 0, (EAST,))), LAB, {}).targets == {}
    assert place(workload(Scaler("daemon", 0)), LAB, {}).targets == {}


def test_no_rules_spread_over_all_hosts() -> None:
    p = place(workload(Scaler("spread", 5)), LAB, {})
    assert p.targets == {"h1": 2, "h2": 2, "h3": 1}
    assert place(workload(Scaler("spread", 1)), {}, {}).failures == ("no live host to run it on",)


def test_daemon_runs_everywhere_matching() -> None:
    p = place(workload(Scaler("daemon", 3, (EAST,))), LAB, {})
    assert p.targets == {"h1": 3, "h2": 3} and p.desired == 6
    p = place(workload(Scaler("daemon", 3), "capability"), LAB, {})
    assert p.targets == {"h1": 1, "h2": 1, "h3": 1} and p.desired == 3
    p = place(workload(Scaler("daemon", 1, (Rule("x", {"zone": "north"}),))), LAB, {})
    assert not p.targets and "zone=north" in p.failures[0]


def test_providers_run_once_per_host() -> None:
    p = place(workload(Scaler("spread", 4, (EAST,)), "capability"), LAB, {})
    assert p.targets == {"h1": 1, "h2": 1}
    assert "only 2 qualify" in p.failures[0]
    p = place(workload(Scaler("spread", 1), "capability"), LAB, {"h3": 1})
    assert p.targets == {"h3": 1}  # sticky


def test_overlapping_rules_partition_hosts_by_first_match() -> None:
    anywhere = Rule("anywhere", {}, 50)
    east = Rule("east", {"zone": "east"}, 50)
    p = place(workload(Scaler("spread", 4, (east, anywhere))), LAB, {})
    assert p.targets == {"h1": 1, "h2": 1, "h3": 2}  # h1, h2 serve east; h3 anywhere
    assert any("h1 matches rules 'east' and 'anywhere'" in n for n in p.notes)
    # the other way round, 'east' is starved: a failure naming the rule that took its hosts
    p = place(workload(Scaler("spread", 4, (anywhere, east))), LAB, {})
    assert p.targets == {"h1": 1, "h2": 1}  # anywhere's 2; east's 2 stay unplaced
    (reason,) = p.failures
    assert "'east'" in reason and "'anywhere'" in reason and "overlapping" in reason
    # and it is a fixed point: placing again from the result changes nothing
    again = place(workload(Scaler("spread", 4, (anywhere, east))), LAB, dict(p.targets))
    assert again.targets == p.targets
