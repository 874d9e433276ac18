"""The pure planner: three labelled hosts, scalers, failures, upgrades, links, ownership.

Each scenario plans, applies the plan with the strict simulator (which refuses what a
host would refuse) and plans again: the second plan must be empty. Hypothesis does the
same over random manifests and lattices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lattice.controller import naming
from lattice.controller.backoff import Failure
from lattice.controller.commands import (
    Command,
    DeleteConfig,
    DeleteLink,
    Phase,
    PutConfig,
    PutLink,
    ScaleComponent,
    StartProvider,
    StopProvider,
    UpdateComponent,
)
from lattice.controller.desired import compile_app
from lattice.controller.manifest import Manifest
from lattice.controller.plan import Plan, plan
from lattice.controller.simulate import SimulationError, apply
from lattice.controller.snapshot import (
    ComponentInstance,
    HostSnapshot,
    LatticeSnapshot,
    ProviderInstance,
)
from lattice.controller.status import State
from lattice.controller.validate import load, validate
from lattice.protocol.links import LinkDelRequest, LinkPutRequest, NamedConfig
from lattice.protocol.messages import (
    ScaleComponentRequest,
    StartProviderRequest,
    StopProviderRequest,
    UpdateComponentRequest,
)

NOW = 1_000.0

# -- building manifests and lattices ---------------------------------------------------


def rule(name: str, weight: int = 100, **requirements: str) -> dict[str, Any]:
    return {"name": name, "requirements": requirements, "weight": weight}


def spread(instances: int, *rules: dict[str, Any], rebalance: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"instances": instances, "spread": list(rules)}
    if rebalance:
        props["rebalance"] = True
    return {"type": "spreadscaler", "properties": props}


def daemon(instances: int, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"type": "daemonscaler", "properties": {"instances": instances, "spread": list(rules)}}


def link(
    target: str,
    package: str = "keyvalue",
    interfaces: Sequence[str] = ("store", "atomics"),
    *,
    namespace: str = "wasi",
    name: str | None = None,
    target_config: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "namespace": namespace,
        "package": package,
        "interfaces": list(interfaces),
        "target": {"name": target, "config": target_config or []},
    }
    if name:
        props["name"] = name
    return {"type": "link", "properties": props}


def comp(
    name: str,
    image: str,
    *traits: dict[str, Any],
    kind: str = "component",
    id: str | None = None,
    config: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {"image": image}
    if id:
        props["id"] = id
    if config:
        props["config"] = config
    return {"name": name, "type": kind, "properties": props, "traits": list(traits)}


def app(name: str, *components: dict[str, Any], version: str = "v1") -> Manifest:
    return load(
        {
            "apiVersion": "core.oam.dev/v1beta1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": {"version": version}},
            "spec": {"components": list(components)},
        }
    )


def host(hid: str, seen: float = NOW, **labels: str) -> HostSnapshot:
    return HostSnapshot(hid, labels, last_seen=seen)


def lattice(*hosts: HostSnapshot, **kw: Any) -> LatticeSnapshot:
    return LatticeSnapshot.build(hosts, **kw)


LAB = lattice(host("h1", zone="east", gpu="yes"), host("h2", zone="east"), host("h3", zone="west"))


def check_requests(commands: Sequence[Command]) -> None:
    """Every command's body is one the control interface accepts."""
    models = {
        ("component", "scale"): ScaleComponentRequest,
        ("component", "update"): UpdateComponentRequest,
        ("provider", "start"): StartProviderRequest,
        ("provider", "stop"): StopProviderRequest,
        ("link", "put"): LinkPutRequest,
        ("link", "del"): LinkDelRequest,
    }
    for cmd in commands:
        noun, verb, target, body = cmd.request()
        json.dumps(body)
        if (noun, verb) in models:
            models[(noun, verb)].model_validate(body)
        elif verb == "put":
            NamedConfig.from_request(body)
        assert (target is None) == (noun == "link")


def step(
    desired: Sequence[Manifest], snap: LatticeSnapshot, **kw: Any
) -> tuple[Plan, LatticeSnapshot]:
    p = plan(desired, snap, now=kw.pop("now", NOW), **kw)
    assert [c.phase for c in p.commands] == sorted(c.phase for c in p.commands)
    check_requests(p.commands)
    return p, apply(p.commands, snap)


def converge(
    desired: Sequence[Manifest], snap: LatticeSnapshot, **kw: Any
) -> tuple[Plan, LatticeSnapshot]:
    """Plan and apply once; then the plan must have nothing left to do."""
    first, snap = step(desired, snap, **kw)
    again = plan(
        desired, snap, now=kw.get("now", NOW), **{k: v for k, v in kw.items() if k != "now"}
    )
    assert again.commands == (), [c.describe() for c in again.commands]
    return first, snap


def counts(snap: LatticeSnapshot, wid: str) -> dict[str, int]:
    return {
        h: s.components[wid].count for h, s in sorted(snap.hosts.items()) if wid in s.components
    }


def provider_hosts(snap: LatticeSnapshot, wid: str) -> list[str]:
    return sorted(h for h, s in snap.hosts.items() if wid in s.providers)


def kinds(p: Plan) -> list[str]:
    return [type(c).__name__ for c in p.commands]


# -- spread, daemon ----------------------------------------------------------------------

ZONES = app(
    "zones",
    comp(
        "echo",
        "file:///echo.wasm",
        spread(10, rule("east", 80, zone="east"), rule("west", 20, zone="west")),
    ),
)


def test_spread_with_weights_over_labelled_hosts() -> None:
    p, snap = converge([ZONES], LAB)
    assert counts(snap, "zones-echo") == {"h1": 4, "h2": 4, "h3": 2}
    assert all(isinstance(c, ScaleComponent) for c in p.commands)
    ann = snap.hosts["h1"].components["zones-echo"].annotations
    assert ann[naming.MANAGED_BY_KEY] == naming.MANAGED_BY and ann[naming.APPSPEC_KEY] == "zones"
    status = plan([ZONES], snap, now=NOW).status["zones"]
    assert status.state is State.DEPLOYED and status.version == "v1"
    (row,) = status.components
    assert (row.desired, row.running, row.where) == (10, 10, ("h1", "h2", "h3"))


def test_80_20_of_4_is_3_1() -> None:
    m = app(
        "four",
        comp(
            "echo",
            "file:///e.wasm",
            spread(4, rule("e", 80, zone="east"), rule("w", 20, zone="west")),
        ),
    )
    _, snap = converge([m], LAB)
    c = counts(snap, "four-echo")
    assert c["h1"] + c["h2"] == 3 and c["h3"] == 1


def test_daemonscaler_on_every_matching_host() -> None:
    m = app(
        "d",
        comp("web", "file:///w.wasm", daemon(2, rule("east", zone="east"))),
        comp("agent", "builtin://keyvalue-nats", daemon(1), kind="capability"),
    )
    _, snap = converge([m], LAB)
    assert counts(snap, "d-web") == {"h1": 2, "h2": 2}
    assert provider_hosts(snap, "d-agent") == ["h1", "h2", "h3"]
    # a host that joins gets its share with no other change
    bigger = snap.with_host(host("h4", zone="east"))
    p, snap = converge([m], bigger)
    assert {(type(c).__name__, c.host_id) for c in p.commands} == {
        ("ScaleComponent", "h4"),
        ("StartProvider", "h4"),
    }


def test_a_rule_without_hosts_fails_with_a_reason() -> None:
    m = app("g", comp("ml", "file:///m.wasm", spread(2, rule("gpu-west", zone="west", gpu="yes"))))
    p, _ = converge([m], LAB)
    assert p.commands == ()
    status = p.status["g"]
    assert status.state is State.FAILED
    assert "rule 'gpu-west' (gpu=yes, zone=west) matches no live host" in status.reason
    assert "lattice label put" in status.reason


# -- hosts lost and joining ------------------------------------------------------------


def test_host_lost_replicas_are_placed_elsewhere() -> None:
    m = app("web", comp("api", "file:///a.wasm", spread(6)))
    _, snap = converge([m], LAB)
    assert counts(snap, "web-api") == {"h1": 2, "h2": 2, "h3": 2}
    old = snap.hosts["h3"]
    quiet = snap.with_host(
        HostSnapshot(old.id, old.labels, old.components, old.providers, NOW - 14)
    )
    assert plan([m], quiet, now=NOW).commands == ()  # not yet expired: 15 s by default
    gone = snap.with_host(HostSnapshot(old.id, old.labels, old.components, old.providers, NOW - 16))
    p, after = converge([m], gone)
    assert p.lost_hosts == ("h3",)
    assert all(getattr(c, "host_id", None) != "h3" for c in p.commands)
    live = {h: n for h, n in counts(after, "web-api").items() if h != "h3"}
    assert live == {"h1": 3, "h2": 3}


def test_host_lost_with_its_rule_fails_and_recovers_when_one_returns() -> None:
    _, snap = converge([ZONES], LAB)
    west = snap.hosts["h3"]
    p, snap2 = converge([ZONES], snap.without_host("h3"))
    assert p.commands == ()  # the west share is not moved east
    assert "rule 'west'" in p.status["zones"].reason
    p, snap3 = converge([ZONES], snap2.with_host(host("h5", zone="west")))
    assert counts(snap3, "zones-echo")["h5"] == 2
    assert p.status["zones"].state is State.RECONCILING
    assert plan([ZONES], snap3, now=NOW).status["zones"].state is State.DEPLOYED
    assert west.id == "h3"


def test_joining_host_gets_nothing_without_rebalance() -> None:
    m = app("web", comp("api", "file:///a.wasm", spread(6)))
    two = lattice(host("h1"), host("h2"))
    _, snap = converge([m], two)
    p, _ = converge([m], snap.with_host(host("h3")))
    assert p.commands == ()


def test_rebalance_starts_new_replicas_before_stopping_old_ones() -> None:
    m = app("web", comp("api", "file:///a.wasm", spread(6, rebalance=True)))
    _, snap = converge([m], lattice(host("h1"), host("h2")))
    assert counts(snap, "web-api") == {"h1": 3, "h2": 3}
    joined = snap.with_host(host("h3"))
    p, after = converge([m], joined)
    phases = p.phases()
    assert [ph for ph, _ in phases] == [Phase.SCALE_UP, Phase.SCALE_DOWN]
    (_, ups), (_, downs) = phases
    assert [(c.host_id, c.count) for c in ups] == [("h3", 2)]
    assert sorted((c.host_id, c.count) for c in downs) == [("h1", 2), ("h2", 2)]
    midway = apply(ups, joined)
    assert sum(counts(midway, "web-api").values()) >= 6  # never below the desired total
    assert counts(after, "web-api") == {"h1": 2, "h2": 2, "h3": 2}


# -- overlapping rules -----------------------------------------------------------------


def test_overlapping_rules_never_oscillate() -> None:
    m = app(
        "o",
        comp(
            "api",
            "file:///a.wasm",
            spread(6, rule("anywhere", 50), rule("east", 50, zone="east")),
        ),
    )
    snap = LAB
    for _ in range(4):
        p, snap = step([m], snap)
    assert p.commands == ()
    status = p.status["o"]
    assert status.state is State.FAILED
    assert "'east'" in status.reason and "overlapping" in status.reason
    assert sum(counts(snap, "o-api").values()) == 3  # anywhere's share only


def test_overlap_resolved_by_first_match_is_reported_not_failed() -> None:
    m = app(
        "o",
        comp(
            "api",
            "file:///a.wasm",
            spread(4, rule("east", 50, zone="east"), rule("anywhere", 50)),
        ),
    )
    _p, snap = converge([m], LAB)
    assert counts(snap, "o-api") == {"h1": 1, "h2": 1, "h3": 2}
    status = plan([m], snap, now=NOW).status["o"]
    assert status.state is State.DEPLOYED
    assert (
        "host h1 matches rules 'east' and 'anywhere'; it serves 'east'"
        in status.components[0].reason
    )


# -- ownership: undeploy, sharing, strays, foreign ids ---------------------------------


def shared_app(name: str, component: str) -> Manifest:
    return app(
        name,
        comp(
            component,
            f"file:///{component}.wasm",
            spread(1),
            link("msg", "messaging", ["consumer"], namespace="wasmcloud"),
            config=[{"name": "settings", "properties": {"who": name}}],
        ),
        comp("msg", "builtin://keyvalue-nats", spread(1), kind="capability", id="shared-msg"),
    )


def test_undeploy_removes_what_it_owned_and_nothing_it_shared() -> None:
    a, b = shared_app("alpha", "web"), shared_app("beta", "worker")
    manual = ComponentInstance("file:///manual.wasm", 1)  # started by hand: not ours
    start = LAB.with_host(
        HostSnapshot("h1", LAB.hosts["h1"].labels, {"manual": manual}, last_seen=NOW)
    )
    _, snap = converge([a, b], start)
    assert provider_hosts(snap, "shared-msg") == ["h1"]
    assert {lk.source_id for lk in snap.links} == {"alpha-web", "beta-worker"}

    p, snap = converge([b], snap, retired=[a])
    assert sorted(kinds(p)) == ["DeleteConfig", "DeleteLink", "ScaleComponent"]
    assert not any(isinstance(c, StopProvider) for c in p.commands)
    assert provider_hosts(snap, "shared-msg") == ["h1"]
    assert counts(snap, "alpha-web") == {} and sum(counts(snap, "beta-worker").values()) == 1
    assert {lk.source_id for lk in snap.links} == {"beta-worker"}
    assert set(snap.configs) == {"beta-worker-settings"}
    assert p.status["alpha"].state is State.UNDEPLOYED and "removing" in p.status["alpha"].reason
    assert plan([b], snap, now=NOW, retired=[a]).status["alpha"].reason == ""

    p, snap = converge([], snap, retired=[a, b])
    assert provider_hosts(snap, "shared-msg") == []
    assert snap.links == () and snap.configs == {}
    assert snap.hosts["h1"].components == {"manual": manual}


def test_shared_provider_is_one_set_of_hosts_for_both_apps() -> None:
    a = app("a", comp("kv", "builtin://kv", spread(1), kind="capability", id="kv"))
    b = app("b", comp("kv", "builtin://kv", spread(2), kind="capability", id="kv"))
    start = LAB.with_host(
        HostSnapshot(
            "h2",
            {"zone": "east"},
            providers={"kv": ProviderInstance("builtin://kv", naming.annotations("a"))},
            last_seen=NOW,
        )
    )
    _, snap = converge([a, b], start)
    assert len(provider_hosts(snap, "kv")) == 2
    assert "h2" in provider_hosts(snap, "kv")  # what ran keeps running


def test_a_provider_id_with_two_images_goes_to_one_app() -> None:
    a = app("a", comp("kv", "builtin://kv-1", spread(1), kind="capability", id="kv"))
    b = app("b", comp("kv", "builtin://kv-2", spread(1), kind="capability", id="kv"))
    p, snap = converge([a, b], LAB)
    assert p.status["a"].state is not State.FAILED
    assert p.status["b"].state is State.FAILED
    assert "provider id 'kv' runs builtin://kv-1" in p.status["b"].reason
    assert {s.providers["kv"].image_ref for s in snap.hosts.values() if "kv" in s.providers} == {
        "builtin://kv-1"
    }


def test_a_component_id_claimed_twice_goes_to_the_app_deployed_first() -> None:
    a = app("a", comp("web", "file:///a.wasm", spread(1), id="web"))
    b = app("b", comp("web", "file:///b.wasm", spread(1), id="web"))
    _, snap = converge([b], LAB)
    p, _ = converge([b, a], snap)  # b was deployed first: a newcomer takes nothing away
    assert p.status["b"].state is State.DEPLOYED
    assert p.status["a"].state is State.FAILED
    assert "already used by application 'b'" in p.status["a"].reason


def test_strays_are_stopped_and_foreign_instances_left_alone() -> None:
    ghost = ComponentInstance("file:///g.wasm", 2, naming.annotations("ghost"))
    theirs = ComponentInstance("file:///mine.wasm", 1)  # same id as ours, not ours
    start = lattice(
        HostSnapshot("h1", {}, {"ghost-web": ghost, "web-api": theirs}, last_seen=NOW),
        host("h2"),
    )
    m = app("web", comp("api", "file:///a.wasm", spread(2)))
    p, snap = converge([m], start)
    assert ScaleComponent("h1", "file:///g.wasm", "ghost-web", 0, ghost.annotations) in p.commands
    assert snap.hosts["h1"].components["web-api"] == theirs
    assert counts(snap, "web-api") == {"h1": 1, "h2": 2}  # h1's is the foreign one
    assert "not started by the controller" in p.status["web"].components[0].reason
    assert p.status["ghost"].state is State.UNDEPLOYED


# -- upgrades, links, config -----------------------------------------------------------


def test_version_upgrade_uses_update_component() -> None:
    v1 = app("up", comp("api", "file:///v1.wasm", spread(3)))
    v2 = app("up", comp("api", "file:///v2.wasm", spread(3)), version="v2")
    _, snap = converge([v1], LAB)
    p, snap = converge([v2], snap, retired=[v1])
    assert kinds(p) == ["UpdateComponent"] * 3
    assert {c.host_id for c in p.commands} == {"h1", "h2", "h3"}
    assert {s.components["up-api"].image_ref for s in snap.hosts.values()} == {"file:///v2.wasm"}
    # a new image and a new count at once: swap and resize in one scale
    v3 = app("up", comp("api", "file:///v3.wasm", spread(6)), version="v3")
    p, snap = converge([v3], snap)
    assert all(isinstance(c, ScaleComponent) and c.allow_update for c in p.commands)
    assert counts(snap, "up-api") == {"h1": 2, "h2": 2, "h3": 2}


def kv_app(
    version: str, target: str, *, extra_link: bool = True, url: str = "redis://a"
) -> Manifest:
    links = [
        link(
            target,
            target_config=[{"name": "conn", "properties": {"url": url}}],
        )
    ]
    if extra_link:
        links.append(link("blob", "blobstore", ["blobstore"]))
    return app(
        "kv",
        comp("counter", "file:///c.wasm", spread(2), *links),
        comp("redis", "builtin://keyvalue-redis", spread(1), kind="capability"),
        comp("vault", "builtin://keyvalue-vault", spread(1), kind="capability"),
        comp("blob", "builtin://blob", spread(1), kind="capability"),
        version=version,
    )


def test_link_target_change_replaces_the_link() -> None:
    v1, v2 = kv_app("v1", "redis"), kv_app("v2", "vault")
    _, snap = converge([v1], LAB)
    p, snap = converge([v2], snap, retired=[v1])
    (put,) = p.commands
    assert put == PutLink(
        "kv-counter",
        "kv-vault",
        "wasi",
        "keyvalue",
        ("store", "atomics"),
        source_config=(),
        target_config=("kv-counter-conn",),
        replace=True,
    )
    assert {lk.target for lk in snap.links if lk.wit_package == "keyvalue"} == {"kv-vault"}


def test_links_and_config_follow_the_manifest() -> None:
    v1 = kv_app("v1", "redis")
    _, snap = converge([v1], LAB)
    v2 = kv_app("v2", "redis", extra_link=False, url="redis://b")
    # without the earlier version, a link the manifest no longer lists is left alone
    p = plan([v2], snap, now=NOW)
    assert [type(c) for c in p.commands] == [PutConfig]
    # with it, the link goes too
    p, snap = converge([v2], snap, retired=[v1])
    assert [type(c) for c in p.commands] == [PutConfig, DeleteLink]
    assert snap.configs["kv-counter-conn"] == {"url": "redis://b"}
    assert {lk.wit_package for lk in snap.links} == {"keyvalue"}


def test_config_goes_in_before_links_and_links_before_components() -> None:
    p, _ = converge([kv_app("v1", "redis")], LAB)
    order = [c.phase for c in p.commands]
    assert order[0] is Phase.PUT_CONFIG
    first_link = order.index(Phase.PUT_LINK)
    assert all(ph < Phase.PUT_LINK for ph in order[:first_link])
    assert order.index(Phase.START_PROVIDER) > first_link


def test_missing_external_config_holds_the_component_back() -> None:
    m = app("x", comp("api", "file:///a.wasm", spread(1), config=[{"name": "shared-db"}]))
    p, _ = converge([m], LAB)
    assert p.commands == ()
    row = p.status["x"].components[0]
    assert row.state is State.FAILED
    assert "config 'shared-db' does not exist" in row.reason
    assert "lattice config put shared-db" in row.reason
    p, _snap = converge([m], lattice(*LAB.hosts.values(), configs={"shared-db": {"u": "1"}}))
    (cmd,) = p.commands
    assert isinstance(cmd, ScaleComponent) and cmd.config == ("shared-db",)


def test_a_link_needing_missing_config_waits() -> None:
    m = app(
        "x",
        comp("api", "file:///a.wasm", spread(1), link("ext-kv", target_config=[{"name": "creds"}])),
    )
    p, _ = converge([m], LAB)
    assert not any(isinstance(c, PutLink) for c in p.commands)
    assert "needs config 'creds'" in p.status["x"].reason


def test_provider_image_change_restarts_it_on_the_same_host() -> None:
    v1 = app("p", comp("kv", "builtin://kv-1", spread(1), kind="capability"))
    v2 = app("p", comp("kv", "builtin://kv-2", spread(1), kind="capability"), version="v2")
    _, snap = converge([v1], LAB)
    p, snap = converge([v2], snap)
    assert [(type(c).__name__, c.phase) for c in p.commands] == [
        ("StopProvider", Phase.RESTART_PROVIDER),
        ("StartProvider", Phase.START_PROVIDER),
    ]
    assert snap.hosts["h1"].providers["p-kv"].image_ref == "builtin://kv-2"


def test_component_config_names_change_is_applied() -> None:
    v1 = app(
        "c",
        comp("api", "file:///a.wasm", spread(1), config=[{"name": "a", "properties": {"k": "1"}}]),
    )
    v2 = app(
        "c",
        comp("api", "file:///a.wasm", spread(1), config=[{"name": "b", "properties": {"k": "1"}}]),
    )
    _, snap = converge([v1], LAB)
    p, snap = converge([v2], snap, retired=[v1])
    scale = next(c for c in p.commands if isinstance(c, ScaleComponent))
    assert scale.config == ("c-api-b",) and scale.count == 1
    assert DeleteConfig("c-api-a") in p.commands


def test_a_component_dropped_from_the_manifest_is_stopped() -> None:
    v1 = app(
        "d", comp("api", "file:///a.wasm", spread(2)), comp("old", "file:///o.wasm", spread(1))
    )
    v2 = app("d", comp("api", "file:///a.wasm", spread(2)), version="v2")
    _, snap = converge([v1], LAB)
    p, snap = converge([v2], snap)  # no earlier version needed: the annotations say it is ours
    assert kinds(p) == ["ScaleComponent"] and p.commands[0].count == 0
    assert p.status["d"].state is State.RECONCILING
    assert "stop d-old" in p.status["d"].reason
    assert counts(snap, "d-old") == {}
    assert plan([v2], snap, now=NOW).status["d"].state is State.DEPLOYED


# -- backoff ---------------------------------------------------------------------------


def test_a_host_that_failed_to_start_is_avoided_while_it_waits() -> None:
    m = app("b", comp("api", "file:///a.wasm", spread(1)))
    failing = {("component", "h1", "b-api"): Failure(1, "no such file", NOW + 30, NOW - 1)}
    _p, snap = converge([m], LAB, failures=failing)
    assert counts(snap, "b-api") == {"h2": 1}
    # once the wait is over, nothing moves back (nothing is missing)
    assert plan([m], snap, now=NOW + 31, host_expiry=60, failures=failing).commands == ()


def test_commands_in_backoff_are_withheld_and_fail_after_the_threshold() -> None:
    v1 = app("u", comp("api", "file:///v1.wasm", spread(1)))
    v2 = app("u", comp("api", "file:///v2.wasm", spread(1)), version="v2")
    _, snap = converge([v1], LAB)
    key = ("component", "h1", "u-api")
    once = {key: Failure(1, "cannot fetch file:///v2.wasm", NOW + 5, NOW - 2)}
    p = plan([v2], snap, now=NOW, failures=once)
    assert p.commands == () and isinstance(p.withheld[0], UpdateComponent)
    assert p.status["u"].state is State.RECONCILING
    assert "retrying in 5s" in p.status["u"].reason
    thrice = {key: Failure(3, "cannot fetch file:///v2.wasm", NOW + 20, NOW - 30)}
    p = plan([v2], snap, now=NOW, failures=thrice)
    assert p.status["u"].state is State.FAILED
    assert "cannot fetch file:///v2.wasm" in p.status["u"].reason
    p = plan([v2], snap, now=NOW + 21, host_expiry=60, failures=thrice)  # wait over: retry
    assert isinstance(p.commands[0], UpdateComponent)


def test_stops_wait_while_the_matching_start_is_held_back() -> None:
    m = app("s", comp("api", "file:///a.wasm", spread(4, rule("east", zone="east"))))
    _, snap = converge([m], LAB)
    assert counts(snap, "s-api") == {"h1": 2, "h2": 2}
    relabelled = snap.with_host(
        HostSnapshot("h2", {"zone": "west"}, snap.hosts["h2"].components, last_seen=NOW)
    )
    p = plan([m], relabelled, now=NOW)
    assert {(c.host_id, c.count) for c in p.commands} == {("h1", 4), ("h2", 0)}
    held = {("component", "h1", "s-api"): Failure(1, "out of memory", NOW + 10, NOW)}
    p = plan([m], relabelled, now=NOW, failures=held)
    assert p.commands == ()
    assert {(c.host_id, c.count) for c in p.withheld} == {("h1", 4), ("h2", 0)}


# -- status and plan shape -------------------------------------------------------------


def test_status_and_plan_serialise() -> None:
    p, _ = converge([kv_app("v1", "redis")], LAB)
    body = json.loads(json.dumps({k: s.to_dict() for k, s in p.status.items()}))
    assert body["kv"]["state"] == "reconciling"
    assert {c["name"] for c in body["kv"]["components"]} == {"counter", "redis", "vault", "blob"}
    assert not plan([], LAB, now=NOW).commands and plan([], LAB, now=NOW).status == {}


def test_deploying_an_app_twice_is_a_caller_bug() -> None:
    m = app("x", comp("api", "file:///a.wasm"))
    with pytest.raises(ValueError, match="deployed twice"):
        plan([m, m], LAB, now=NOW)


# -- hypothesis: any manifests, any lattice --------------------------------------------

LABELS = st.dictionaries(
    st.sampled_from(["zone", "gpu"]), st.sampled_from(["east", "west", "yes"]), max_size=2
)
REQS = st.dictionaries(
    st.sampled_from(["zone", "gpu"]), st.sampled_from(["east", "west", "yes"]), max_size=2
)
IDS = ["a-c0", "a-c1", "a-c2", "b-c0", "b-c1", "shared", "other"]
IMAGES = ["file:///one.wasm", "file:///two.wasm"]


@st.composite
def manifests(draw: st.DrawFn) -> list[Manifest]:
    out = []
    for name in draw(st.sampled_from([["a"], ["b"], ["a", "b"]])):
        n = draw(st.integers(1, 3))
        names = [f"c{i}" for i in range(n)]
        components = []
        for cname in names:
            kind = draw(st.sampled_from(["component", "capability"]))
            traits: list[dict[str, Any]] = []
            scaler = draw(st.sampled_from([None, "spread", "daemon"]))
            rules = [
                rule(f"r{i}", draw(st.integers(1, 100)), **draw(REQS))
                for i in range(draw(st.integers(0, 3)))
            ]
            if scaler == "spread":
                traits.append(
                    spread(draw(st.integers(0, 7)), *rules, rebalance=draw(st.booleans()))
                )
            elif scaler == "daemon":
                traits.append(daemon(draw(st.integers(0, 3)), *rules))
            targets = draw(st.lists(st.sampled_from([*names, "outside"]), max_size=2, unique=True))
            for i, target in enumerate(t for t in targets if t != cname):
                cfg = draw(
                    st.sampled_from(
                        [
                            [],
                            [{"name": "conn", "properties": {"u": draw(st.sampled_from("12"))}}],
                            [{"name": "ext"}],
                        ]
                    )
                )
                traits.append(link(target, name=f"l{i}", target_config=cfg))
            config = draw(
                st.sampled_from(
                    [None, [{"name": "cfg", "properties": {"k": "v"}}], [{"name": "ext"}]]
                )
            )
            explicit = draw(st.sampled_from([None, None, "shared"]))
            components.append(
                comp(
                    cname,
                    draw(st.sampled_from(IMAGES)),
                    *traits,
                    kind=kind,
                    id=explicit,
                    config=config,
                )
            )
        report = validate(
            {
                "apiVersion": "core.oam.dev/v1beta1",
                "kind": "Application",
                "metadata": {"name": name, "annotations": {"version": "v1"}},
                "spec": {"components": components},
            }
        )
        assume(report.manifest is not None)
        assert report.manifest is not None
        out.append(report.manifest)
    return out


@st.composite
def lattices(draw: st.DrawFn) -> LatticeSnapshot:
    hosts = []
    for i in range(draw(st.integers(0, 4))):
        components = {}
        providers = {}
        for wid in draw(st.lists(st.sampled_from(IDS), max_size=3, unique=True)):
            owner = draw(st.sampled_from([None, "a", "b", "gone"]))
            cfg = draw(st.sampled_from([None, (), ("a-c0-cfg",)]))
            ann = naming.annotations(owner, cfg) if owner else {}
            count = draw(st.integers(1, 3))
            components[wid] = ComponentInstance(draw(st.sampled_from(IMAGES)), count, ann)
        for wid in draw(st.lists(st.sampled_from(IDS), max_size=2, unique=True)):
            owner = draw(st.sampled_from([None, "a", "b", "gone"]))
            ann = naming.annotations(owner) if owner else {}
            providers[wid] = ProviderInstance(draw(st.sampled_from(IMAGES)), ann)
        seen = draw(st.sampled_from([NOW, NOW, NOW - 5, NOW - 60]))
        hosts.append(HostSnapshot(f"h{i}", draw(LABELS), components, providers, seen))
    configs = draw(
        st.dictionaries(st.sampled_from(["ext", "a-c0-cfg", "b-c1-conn"]), st.just({"u": "0"}))
    )
    links = []
    for source in draw(st.lists(st.sampled_from(IDS), max_size=3, unique=True)):
        links.append(
            {
                "source_id": source,
                "target": draw(st.sampled_from(IDS)),
                "name": draw(st.sampled_from(["default", "l0"])),
                "wit_namespace": "wasi",
                "wit_package": "keyvalue",
                "interfaces": ["store"],
            }
        )
    return LatticeSnapshot.build(hosts, links, configs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desired=manifests(), snap=lattices())
def test_a_plan_applied_leaves_nothing_to_do(
    desired: list[Manifest], snap: LatticeSnapshot
) -> None:
    first, after = step(desired, snap)  # apply refuses anything a host would refuse
    lost = set(first.lost_hosts)
    assert not any(getattr(c, "host_id", None) in lost for c in first.commands)
    second = plan(desired, after, now=NOW)
    assert second.commands == (), [c.describe() for c in second.commands]
    for status in second.status.values():
        for row in status.components:
            assert row.state is not State.RECONCILING, row
    # foreign (unmanaged) instances are never touched
    for hid, h in snap.hosts.items():
        for wid, inst in h.components.items():
            if not naming.is_managed(inst.annotations):
                assert after.hosts[hid].components.get(wid) == inst


FAILURE_KEYS = st.tuples(
    st.sampled_from(["component", "provider"]),
    st.sampled_from(["h0", "h1", "h2"]),
    st.sampled_from(IDS),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    desired=manifests(),
    snap=lattices(),
    failing=st.dictionaries(FAILURE_KEYS, st.integers(1, 4), max_size=3),
)
def test_with_commands_in_backoff_the_plan_is_still_a_fixed_point(
    desired: list[Manifest], snap: LatticeSnapshot, failing: dict[tuple[str, ...], int]
) -> None:
    failures = {k: Failure(n, "boom", NOW + 10, NOW - 1) for k, n in failing.items()}
    first, after = step(desired, snap, failures=failures)
    assert not {c.key for c in first.commands} & set(failures)
    assert plan(desired, after, now=NOW, failures=failures).commands == ()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(desired=manifests(), snap=lattices())
def test_undeploying_everything_leaves_only_what_was_not_ours(
    desired: list[Manifest], snap: LatticeSnapshot
) -> None:
    _, deployed = step(desired, snap)
    p, after = step([], deployed, retired=desired)
    assert plan([], after, now=NOW, retired=desired).commands == ()
    live = deployed.live_hosts(NOW, 15.0)
    for hid in live:
        h = after.hosts[hid]
        assert not any(naming.is_managed(i.annotations) for i in h.components.values())
        assert not any(naming.is_managed(i.annotations) for i in h.providers.values())
    ours = {lk.identity for m in desired for lk in _links_of(m)}
    assert not ours & {lk.identity for lk in after.links}
    for status in p.status.values():
        assert status.state is State.UNDEPLOYED


def _links_of(m: Manifest) -> list[Any]:
    return list(compile_app(m).links)


def test_commands_compare_by_what_they_do() -> None:
    a = ScaleComponent("h", "r", "c", 0, {"x": "y"}, phase=Phase.SCALE_DOWN)
    b = ScaleComponent("h", "r", "c", 0, {"x": "y"})
    assert a == b and hash(a) == hash(b)
    assert len({StartProvider("h", "r", "p"), StartProvider("h", "r", "p")}) == 1
    assert PutConfig("n", {"a": "1"}) != PutConfig("n", {"a": "2"})


def test_the_simulator_refuses_what_a_host_refuses_unless_told_to_skip() -> None:
    snap = lattice(host("h1"))
    bad = [StopProvider("h1", "nope"), ScaleComponent("h9", "file:///a.wasm", "x", 1)]
    for cmd in bad:
        with pytest.raises(SimulationError):
            apply([cmd], snap)
    good = ScaleComponent("h1", "file:///a.wasm", "x", 1)
    assert counts(apply([*bad, good], snap, strict=False), "x") == {"h1": 1}


# -- causes: every stop says which rule and which observed fact ----------------------------


def stops_of(p: Plan) -> dict[str, str]:
    """describe() → reason of each command that stops or removes something."""
    from lattice.controller.commands import stops

    return {c.describe(): c.reason for c in p.commands if stops(c)}


def test_a_scale_down_names_the_rule_with_the_surplus() -> None:
    _, snap = converge([ZONES], LAB)
    fewer = app(
        "zones",
        comp(
            "echo",
            "file:///echo.wasm",
            spread(5, rule("east", 80, zone="east"), rule("west", 20, zone="west")),
        ),
        version="v2",
    )
    p, _ = converge([fewer], snap)
    assert stops_of(p) == {
        "scale zones-echo to 2 on h1": "replica surplus on rule 'east' (zone=east): 8 > 4",
        "scale zones-echo to 2 on h2": "replica surplus on rule 'east' (zone=east): 8 > 4",
        "scale zones-echo to 1 on h3": "replica surplus on rule 'west' (zone=west): 2 > 1",
    }
    assert all(p.apps_of(c) == ("zones",) for c in p.commands)


def test_a_label_change_names_the_host_and_its_labels() -> None:
    _, snap = converge([ZONES], LAB)
    moved = snap.with_host(
        HostSnapshot("h3", {"zone": "north"}, snap.hosts["h3"].components, {}, NOW)
    )
    p, _ = converge([ZONES], moved)
    assert stops_of(p) == {
        "stop zones-echo on h3": "host h3 (zone=north) no longer matches rule 'east' "
        "(zone=east) or rule 'west' (zone=west)"
    }


def test_a_dropped_component_and_an_undeployed_app_say_so() -> None:
    v1 = app(
        "d", comp("api", "file:///a.wasm", spread(2)), comp("old", "file:///o.wasm", spread(1))
    )
    v2 = app("d", comp("api", "file:///a.wasm", spread(2)), version="v2")
    _, snap = converge([v1], LAB)
    p, snap = step([v2], snap)
    assert set(stops_of(p).values()) == {"manifest v2 of 'd' no longer has d-old"}
    p, _ = step([], snap, retired=[v2])
    assert set(stops_of(p).values()) == {
        "application 'd' is not deployed, and d-api was started for it"
    }


def test_provider_restart_link_and_config_deletes_carry_causes() -> None:
    v1 = kv_app("v1", "redis")
    _, snap = converge([v1], LAB)
    v2 = app(
        "kv",
        comp("counter", "file:///c.wasm", spread(2)),
        comp("redis", "builtin://keyvalue-redis-2", spread(1), kind="capability"),
        version="v2",
    )
    p, _ = converge([v2], snap, retired=[v1])
    causes = stops_of(p)
    restart = next(v for k, v in causes.items() if k.startswith("stop provider kv-redis"))
    assert (
        "runs builtin://keyvalue-redis" in restart and "wants builtin://keyvalue-redis-2" in restart
    )
    assert causes["delete link from kv-counter (wasi:keyvalue, default)"] == (
        "no deployed manifest declares this link (an earlier or undeployed 'kv' did)"
    )
    assert causes["delete config kv-counter-conn"] == (
        "config kv-counter-conn came from a retired manifest of 'kv'; nothing deployed uses it"
    )
    assert causes["stop provider kv-vault on h1"] == ("manifest v2 of 'kv' no longer has kv-vault")


def test_a_lost_host_is_named_with_how_long_it_was_silent() -> None:
    _, snap = converge([ZONES], LAB)
    stale = snap.with_host(replace(snap.hosts["h1"], last_seen=NOW - 3.1))
    p = plan([ZONES], stale, now=NOW, host_expiry=3.0)
    assert p.lost_hosts == ("h1",)
    assert p.losses == {"h1": "host h1 lost (not seen for 3.1 s)"}
    assert stops_of(p) == {}  # nothing is sent to a lost host; its replicas start elsewhere
