"""The capability policy's decision core (lattice/policy.py): pure, no NATS."""

from __future__ import annotations

import time

import pytest

from lattice import natsjwt, policy
from lattice.controller.desired import compile_app
from lattice.controller.validate import validate
from lattice.policy import ComponentPolicy, PolicyError
from lattice.protocol.links import Link, NamedConfig
from lattice.protocol.policy import (
    PolicyAction,
    PolicyHost,
    PolicyRequest,
    PolicyResponse,
    PolicySource,
)


def link(interfaces: list[str], ns: str = "wasi", pkg: str = "keyvalue", **kw: object) -> Link:
    return Link(
        source_id="counter",
        target="kv",
        wit_namespace=ns,
        wit_package=pkg,
        interfaces=interfaces,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "pattern, iface, allowed",
    [
        ("wasi:keyvalue/store", ("wasi", "keyvalue", "store"), True),
        ("wasi:keyvalue/store", ("wasi", "keyvalue", "atomics"), False),
        ("wasi:keyvalue/*", ("wasi", "keyvalue", "atomics"), True),
        ("wasi:keyvalue", ("wasi", "keyvalue", "batch"), True),
        ("wasi:keyvalue/*", ("wasi", "blobstore", "container"), False),
        ("wasi:*", ("wasi", "blobstore", "container"), True),
        ("wasi:*", ("wasmcloud", "messaging", "consumer"), False),
        ("*", ("lattice", "examples", "greet"), True),
        ("wasi:keyvalue/store@0.2.0-draft", ("wasi", "keyvalue", "store"), True),
    ],
)
def test_import_patterns(pattern: str, iface: tuple[str, str, str], allowed: bool) -> None:
    p = ComponentPolicy.from_values("c", {"imports": pattern})
    assert p.may_import(*iface) is allowed


def test_link_beyond_the_policy_is_refused_naming_policy_component_and_interface() -> None:
    p = ComponentPolicy.from_values("counter", {"imports": "wasi:keyvalue/store"})
    assert policy.check_link(p, link(["store"])) is None
    why = policy.check_link(p, link(["store", "atomics"]))
    assert why is not None
    assert "capability policy policy=counter" in why
    assert "component counter may not import wasi:keyvalue/atomics" in why
    assert "wasi:keyvalue/store)" in why  # what it does allow
    assert policy.check_link(None, link(["atomics"])) is None  # no policy: open


def test_empty_list_denies_and_absent_list_stays_open() -> None:
    none = ComponentPolicy.from_values("c", {"imports": "", "config": ""})
    assert not none.may_import("wasi", "keyvalue", "store")
    assert not none.may_read("anything")
    open_ = ComponentPolicy.from_values("c", {"egress": "example.org"})
    assert open_.may_import("wasi", "keyvalue", "store") and open_.may_read("x")


def test_link_source_config_counts_as_config_read() -> None:
    p = ComponentPolicy.from_values("counter", {"config": "app-*"})
    assert policy.check_link(p, link(["store"], source_config=["app-redis"])) is None
    why = policy.check_link(p, link(["store"], source_config=["other"]))
    assert why is not None and "may not read config other" in why


def test_config_attach_and_read() -> None:
    configs = {
        "policy=settings": NamedConfig(values={"config": "base"}),
        "base": NamedConfig(values={"a": "1"}),
        "secret-stuff": NamedConfig(values={"b": "2"}),
    }
    names, found, refused = policy.readable(configs, "settings", ["base", "secret-stuff"])
    assert names == ["base"] and found is not None
    assert refused is not None and "config read refused" in refused
    assert "policy=settings" in refused and "secret-stuff" in refused
    assert policy.readable(configs, "settings", ["base"])[2] is None
    assert policy.readable(configs, "other", ["secret-stuff"]) == (["secret-stuff"], None, None)
    why = policy.check_config(found, ["secret-stuff"], "component start")
    assert why is not None and why.startswith("component start refused")


def test_egress_default_denies_allowed_hosts_is_a_source_policy_wins() -> None:
    view = policy.ConfigView()
    assert not policy.may_reach(view, "example.org", 443)  # nothing set: denied
    view = policy.ConfigView({"allowed_hosts": "example.org"})
    assert policy.may_reach(view, "example.org", 443)  # the compatible source
    view.policy = ComponentPolicy.from_values("c", {"imports": "*"})  # no egress list
    assert policy.may_reach(view, "example.org", 443)
    view.policy = ComponentPolicy.from_values("c", {"egress": "api.example.com:443"})
    assert not policy.may_reach(view, "example.org", 443)  # the policy's list wins
    assert policy.may_reach(view, "api.example.com", 443)
    assert not policy.may_reach(view, "api.example.com", 80)
    view.policy = ComponentPolicy.from_values("c", {"egress": ""})
    assert not policy.may_reach(view, "example.org", 443)


def test_policy_is_parsed_once_per_record() -> None:
    record = NamedConfig(values={"egress": "*"})
    first = policy.policy_of({"policy=x": record}, "x")
    assert first is policy.policy_of({"policy=x": record}, "x")  # the same object: cached
    changed = NamedConfig(values={"egress": "a.example"})
    second = policy.policy_of({"policy=x": changed}, "x")
    assert second is not first and second is not None and second.egress == ("a.example",)


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"imports": "wasi:key value/store"}, "imports: 'wasi:key value/store' is not"),
        ({"imports": "wasi/keyvalue"}, "imports: 'wasi/keyvalue'"),
        ({"egress": "http://x.org/"}, "egress: 'http://x.org/'"),
        ({"config": "a*b"}, "config: 'a*b'"),
        ({"imprts": "*"}, "imprts: unknown policy field; expected one of: imports, egress"),
    ],
)
def test_bad_records_name_the_field(values: dict[str, str], needle: str) -> None:
    with pytest.raises(PolicyError) as exc:
        ComponentPolicy.from_values("c", values)
    assert needle in str(exc.value)
    why = policy.check_record("policy=c", values)
    assert why is not None and "capability policy of c" in why and needle in why
    assert policy.check_record("ordinary", values) is None


def test_a_record_that_does_not_parse_denies_what_it_could_restrict() -> None:
    bad = policy.policy_of({"policy=y": NamedConfig(values={"imports": "??"})}, "y")
    assert bad is not None and not bad.may_import("wasi", "keyvalue", "store")
    assert not bad.may_read("x") and not bad.may_reach("a", 1, {"allowed_hosts": "*"})


def test_record_names() -> None:
    assert policy.record_name("kvcounter-counter") == "policy=kvcounter-counter"
    assert policy.component_of("policy=kvcounter-counter") == "kvcounter-counter"
    assert policy.component_of("settings") is None
    with pytest.raises(PolicyError, match="component id 'a:b'"):
        policy.record_name("a:b")


def test_requester_signature() -> None:
    key = natsjwt.Key.new(20 << 3)  # a user nkey (U…)
    now = time.time()
    headers = policy.requester_headers(key, "wasmbus.ctl.v1.x.link.put", b"{}", now)
    assert key.seed not in str(headers)
    assert policy.requester_of(headers, "wasmbus.ctl.v1.x.link.put", b"{}", now) == (
        key.public,
        True,
    )
    # another body, another subject, a stale time, a forged key: a claim only
    assert policy.requester_of(headers, "wasmbus.ctl.v1.x.link.put", b"{1}", now)[1] is False
    assert policy.requester_of(headers, "wasmbus.ctl.v1.y.link.put", b"{}", now)[1] is False
    assert policy.requester_of(headers, "wasmbus.ctl.v1.x.link.put", b"{}", now + 900)[1] is False
    other = natsjwt.Key.new(20 << 3)
    forged = {**headers, policy.REQUESTER_HEADER: other.public}
    assert policy.requester_of(forged, "wasmbus.ctl.v1.x.link.put", b"{}", now) == (
        other.public,
        False,
    )
    assert policy.requester_of(None, "s", b"", now) == ("anonymous", False)


def test_decision_messages_round_trip_and_cache_key_ignores_the_id() -> None:
    host = PolicyHost(host_id="N1", lattice="default")
    a = PolicyRequest(
        request_id="1",
        action=PolicyAction.PUT_LINK,
        source=PolicySource(component_id="c", issuer="A1", subject="M1"),
        host=host,
    )
    b = a.model_copy(update={"request_id": "2"})
    assert a.cache_key() == b.cache_key()
    assert PolicyRequest.model_validate_json(a.model_dump_json()) == a
    assert PolicyResponse.model_validate_json('{"permitted": false}').message is None


MANIFEST = """
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: shop, annotations: {version: v1}}
spec:
  components:
    - name: counter
      type: component
      properties:
        image: file:///counter.wasm
        config: [{name: settings, properties: {a: "1"}}, {name: shared}]
        policy:
          imports: [wasi:keyvalue/store]
          egress: [api.example.com]
          config: [settings, shared]
"""


def test_manifest_policy_becomes_the_policy_record() -> None:
    report = validate(MANIFEST)
    assert report.manifest is not None, report.errors
    spec = compile_app(report.manifest)
    record = next(c for c in spec.configs if c.name == "policy=shop-counter")
    assert dict(record.values) == {
        "imports": "wasi:keyvalue/store",
        "egress": "api.example.com",
        "config": "shop-counter-settings,shared",  # inline entries by their config name
    }


@pytest.mark.parametrize(
    "policy_yaml, path, needle",
    [
        (
            "{imports: [wasi:keyvalue/store, 'not an interface']}",
            "spec.components[0].properties.policy.imports",
            "'not an interface' is not an interface pattern",
        ),
        (
            "{egress: ['http://x/']}",
            "spec.components[0].properties.policy.egress",
            "is not a host pattern",
        ),
        (
            "{imprts: ['*']}",
            "spec.components[0].properties.policy.imprts",
            "did you mean 'imports'",
        ),
    ],
)
def test_manifest_policy_errors_name_the_field(policy_yaml: str, path: str, needle: str) -> None:
    text = MANIFEST.split("        policy:")[0] + f"        policy: {policy_yaml}\n"
    report = validate(text)
    assert report.manifest is None
    found = [str(e) for e in report.errors]
    assert any(path in e and needle in e for e in found), found


def test_manifest_policy_on_a_provider_is_an_error() -> None:
    text = MANIFEST.replace("type: component", "type: capability")
    report = validate(text)
    assert any(
        "properties.policy" in str(e) and "not providers" in str(e) for e in report.errors
    ), report.errors


def test_clients_sign_with_the_user_key_of_their_login(tmp_path) -> None:
    from lattice.client import signer_of
    from lattice.natsauth import ANONYMOUS, NatsAuth

    key = natsjwt.Key.new(20 << 3)
    seed_file = tmp_path / "user.nk"
    seed_file.write_text(key.seed + "\n")
    signer = signer_of(NatsAuth(nkey=seed_file))
    assert signer is not None and signer.public == key.public
    assert signer_of(ANONYMOUS) is None
