"""Manifest validation: examples, precise errors with paths and lines, warnings, schema."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice.controller import naming
from lattice.controller.desired import compile_app
from lattice.controller.manifest import Manifest
from lattice.controller.report import ManifestError
from lattice.controller.schema import SCHEMA_PATH, render
from lattice.controller.validate import load, validate, validate_file

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
EXAMPLES = sorted(MANIFESTS.glob("*.yaml"))


def base() -> dict[str, Any]:
    """A small valid manifest: a component linked to a provider."""
    return {
        "apiVersion": "core.oam.dev/v1beta1",
        "kind": "Application",
        "metadata": {"name": "demo", "annotations": {"version": "v1"}},
        "spec": {
            "components": [
                {
                    "name": "counter",
                    "type": "component",
                    "properties": {"image": "file:///counter.wasm"},
                    "traits": [
                        {"type": "spreadscaler", "properties": {"instances": 2}},
                        {
                            "type": "link",
                            "properties": {
                                "namespace": "wasi",
                                "package": "keyvalue",
                                "interfaces": ["store", "atomics"],
                                "target": {"name": "kv"},
                            },
                        },
                    ],
                },
                {
                    "name": "kv",
                    "type": "capability",
                    "properties": {"image": "builtin://keyvalue-redis"},
                    "traits": [{"type": "spreadscaler", "properties": {"instances": 1}}],
                },
            ]
        },
    }


def errors_of(data: Any) -> list[str]:
    return [str(p) for p in validate(data).errors]


def warnings_of(data: Any) -> list[str]:
    return [str(p) for p in validate(data).warnings]


# -- the examples ----------------------------------------------------------------------


def test_the_examples_are_there() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"kvcounter", "pingpong", "polyglot", "zones"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates_cleanly(path: Path) -> None:
    report = validate_file(path)
    assert report.errors == []
    assert report.warnings == []
    assert report.manifest is not None and report.manifest.version
    # and as JSON, the same
    as_json = json.dumps(yaml.safe_load(path.read_text()))
    assert validate(as_json).manifest == report.manifest


def test_examples_say_what_they_need() -> None:
    zones = load((MANIFESTS / "zones.yaml").read_text())
    spread = zones.components[0].scalers[0].properties
    assert [r.weight for r in spread.spread] == [80, 20]
    poly = compile_app(load((MANIFESTS / "polyglot.yaml").read_text()))
    (link,) = poly.links
    assert (link.wit_namespace, link.wit_package, link.interfaces) == (
        "lattice",
        "examples",
        ("greet",),
    )
    assert link.source_id == "polyglot-caller" and link.target == "polyglot-greeter"
    kv = compile_app(load((MANIFESTS / "kvcounter.yaml").read_text()))
    assert {c.name for c in kv.configs} == {
        "kvcounter-counter-counts",
        "kvcounter-httpserver-listen",
    }


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "manifests/schema.json is stale: run python -m lattice.controller.schema"
    )


# -- shape errors, each with its precise path ------------------------------------------


def mutate(path: str, value: Any) -> dict[str, Any]:
    """base() with the value at a dotted path (ints index lists) set, or deleted (...)."""
    data = base()
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = data
    for p in parts[:-1]:
        node = node[p]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


C0, C1 = "spec.components[0]", "spec.components[1]"


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (
            "spec.components.0.traits.0.properties.instances",
            -1,
            f"{C0}.traits[0].properties.instances: must be >= 0",
        ),
        (
            "spec.components.0.traits.0.properties.instances",
            "4",
            f"{C0}.traits[0].properties.instances: must be an integer",
        ),
        (
            "spec.components.0.traits.0.properties.instances",
            10_001,
            f"{C0}.traits[0].properties.instances: must be <= 10000",
        ),
        ("apiVersion", "v2", "apiVersion: must be 'core.oam.dev/v1beta1' (got 'v2')"),
        ("kind", ..., "kind: is required"),
        ("metadata.name", "my app", "metadata.name: application name 'my app' must start"),
        ("spec.components", [], "spec.components: must not be empty"),
        ("spec.components.0.type", "actorz", f"{C0}.type: must be 'component' or 'capability'"),
        ("spec.components.0.properties.image", "", f"{C0}.properties.image: must not be empty"),
        (
            "spec.components.0.properties.imgae",
            "x",
            f"{C0}.properties.imgae: unknown field; did you mean 'image'?",
        ),
        ("spec.components.0.properties.id", "a.b", f"{C0}.properties.id: id 'a.b' cannot be used"),
        (
            "spec.components.0.properties.secrets",
            [],
            f"{C0}.properties.secrets: unknown field: secrets are not supported",
        ),
        (
            "spec.components.0.traits.0.type",
            "autoscaler",
            f"{C0}.traits[0]: unknown trait type 'autoscaler'; expected one of: spreadscaler",
        ),
        ("spec.components.0.traits.0.type", ..., f"{C0}.traits[0]: a trait needs a `type`"),
        (
            "spec.components.0.traits.0.properties.spread",
            [{"name": "x", "weight": -5}],
            f"{C0}.traits[0].properties.spread[0].weight: must be >= 0",
        ),
        (
            "spec.components.0.traits.0.properties.spread",
            [{"weight": 5}],
            f"{C0}.traits[0].properties.spread[0].name: is required",
        ),
        (
            "spec.components.0.traits.0.properties.rebalance",
            "yes",
            f"{C0}.traits[0].properties.rebalance: must be true or false",
        ),
        (
            "spec.components.0.traits.1.properties.interfaces",
            [],
            f"{C0}.traits[1].properties.interfaces: must not be empty",
        ),
        (
            "spec.components.0.traits.1.properties.namespace",
            "wa si",
            f"{C0}.traits[1].properties.namespace: namespace 'wa si' must be a WIT identifier",
        ),
        (
            "spec.components.0.traits.1.properties.target",
            ...,
            f"{C0}.traits[1].properties.target: is required",
        ),
        (
            "spec.components.0.traits.1.properties.target_config",
            [],
            f"{C0}.traits[1].properties.target_config: unknown field: the old link format",
        ),
        (
            "spec.components.0.traits.1.properties.name",
            "a b",
            f"{C0}.traits[1].properties.name: link name 'a b' cannot be used",
        ),
        (
            "spec.components.0.properties.config",
            [{"name": "bad name!"}],
            f"{C0}.properties.config[0]: config name 'bad name!' may hold only",
        ),
        (
            "spec.components.0.properties.config",
            [{"name": "c", "properties": {"k": ["a"]}}],
            f"{C0}.properties.config[0].properties.k: must be a string",
        ),
    ],
)
def test_shape_errors_name_the_path(path: str, value: Any, expected: str) -> None:
    errors = errors_of(mutate(path, value))
    assert any(e.startswith(expected) for e in errors), errors
    assert validate(mutate(path, value)).manifest is None


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (
            "spec.components.1.name",
            "counter",
            f"{C1}.name: two components named 'counter' (the other is {C0})",
        ),
        (
            "spec.components.1.properties.id",
            "demo-counter",
            f"{C1}.properties.id: lattice id 'demo-counter' is also the id of {C0} ('counter')",
        ),
        (
            "spec.components.0.traits.2",
            {"type": "daemonscaler", "properties": {"instances": 1}},
            f"{C0}.traits[2]: a component takes one scaler, not a spreadscaler (traits[0]) "
            "and a daemonscaler",
        ),
        (
            "spec.components.0.traits.2",
            {"type": "spreadscaler", "properties": {"instances": 1}},
            f"{C0}.traits[2]: a component takes one scaler; traits[0] is already a spreadscaler",
        ),
        (
            "spec.components.0.traits.0.properties.spread",
            [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}],
            f"{C0}.traits[0].properties.spread: the weights add up to 0",
        ),
        (
            "spec.components.0.traits.0.properties.spread",
            [{"name": "a"}, {"name": "a", "requirements": {"zone": "x"}}],
            f"{C0}.traits[0].properties.spread[1].name: two spread rules named 'a' "
            "(the other is spread[0])",
        ),
        (
            "spec.components.0.traits.1.properties.target",
            {"name": "counter"},
            f"{C0}.traits[1].properties.target.name: a component cannot link to itself",
        ),
        (
            "spec.components.0.traits.1.properties.target",
            {"name": "not a token"},
            f"{C0}.traits[1].properties.target.name: 'not a token' is neither a component",
        ),
        (
            "spec.components.0.traits.2",
            {
                "type": "link",
                "properties": {
                    "namespace": "wasi",
                    "package": "keyvalue",
                    "interfaces": ["batch"],
                    "target": "kv",
                },
            },
            f"{C0}.traits[2].properties.name: a second link for wasi:keyvalue with link name "
            "'default' (the first is traits[1])",
        ),
        (
            "metadata.annotations.version",
            "latest",
            "metadata.annotations.version: 'latest' is reserved",
        ),
    ],
)
def test_meaning_errors_name_the_path(path: str, value: Any, expected: str) -> None:
    data = base()
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = data
    for p in parts[:-1]:
        node = node[p]
    last = parts[-1]
    if isinstance(node, list) and last == len(node):
        node.append(value)
    else:
        node[last] = value
    errors = errors_of(data)
    assert any(e.startswith(expected) for e in errors), errors


def test_configs_colliding_with_different_values() -> None:
    data = base()
    comp = data["spec"]["components"][0]
    comp["properties"]["config"] = [{"name": "url", "properties": {"a": "1"}}]
    comp["traits"][1]["properties"]["target"]["config"] = [
        {"name": "url", "properties": {"a": "2"}}
    ]
    (error,) = errors_of(data)
    assert error.startswith(
        f"{C0}.traits[1].properties.target.config[0].name: config 'demo-counter-url' is defined "
        f"twice with different properties (also {C0}.properties.config[0])"
    )
    comp["traits"][1]["properties"]["target"]["config"][0]["properties"] = {"a": "1"}
    assert errors_of(data) == []  # the same config twice is fine


def test_every_problem_is_reported_at_once() -> None:
    data = base()
    data["kind"] = "App"
    data["spec"]["components"][0]["traits"][0]["properties"]["instances"] = -1
    data["spec"]["components"][1]["properties"]["image"] = 5
    data["spec"]["components"][1]["name"] = "counter"  # duplicate, on a broken component
    paths = {p.path for p in validate(data).errors}
    assert paths == {
        "kind",
        f"{C0}.traits[0].properties.instances",
        f"{C1}.properties.image",
        f"{C1}.name",
    }


def test_errors_and_warnings_carry_lines() -> None:
    text = """\
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: demo
  annotations:
    version: v1
spec:
  components:
    - name: counter
      type: component
      properties:
        image: file:///c.wasm
      traits:
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store, stor]
            target: elsewhere
    - name: other
      type: component
      properties:
        image: file:///o.wasm
      traits:
        - type: spreadscaler
          properties:
            instances: -2
"""
    report = validate(text)
    (error,) = report.errors
    assert str(error) == f"{C1}.traits[0].properties.instances (line 27): must be >= 0"
    lines = {w.path: w.line for w in report.warnings}
    assert lines[f"{C0}.traits[0].properties.interfaces[1]"] == 18
    assert lines[f"{C0}.traits[0].properties.target.name"] == 19
    assert lines[f"{C0}.traits"] == 14  # no scaler


# -- parsing ---------------------------------------------------------------------------


def test_yaml_syntax_errors_have_line_and_column() -> None:
    (error,) = validate("apiVersion: x\nkind: [Application\nmetadata: {}\n").errors
    assert error.path == "<document>" and error.line is not None
    assert "invalid YAML" in error.message and "line" in error.message
    (error,) = validate("a: b: c\n").errors
    assert "mapping values are not allowed here" in error.message and error.line == 1


def test_duplicate_keys_are_errors() -> None:
    (error,) = validate("kind: Application\nkind: Other\n").errors
    assert (
        str(error) == "kind (line 2): duplicate key (first on line 1); only one value can be kept"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the manifest is empty"),
        ("# only a comment\n", "the manifest is empty"),
        ("- a\n- b\n", "the manifest is a list, not a mapping"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ('{"apiVersion": ', "invalid JSON"),
    ],
)
def test_documents_that_are_not_a_manifest(text: str, message: str) -> None:
    (error,) = validate(text).errors
    assert message in error.message


def test_json_and_bytes_are_accepted() -> None:
    text = json.dumps(base())
    assert validate(text).ok and validate(text.encode()).ok and validate(base()).ok


def test_load_raises_with_the_whole_report() -> None:
    data = mutate("kind", "Nope")
    with pytest.raises(ManifestError) as err:
        load(data)
    assert "kind: must be 'Application'" in str(err.value)
    assert err.value.report.errors
    assert isinstance(load(base()), Manifest)


# -- shorthands ------------------------------------------------------------------------


def test_wadm_shorthands() -> None:
    data = base()
    comp = data["spec"]["components"][0]
    comp["type"] = "actor"
    comp["traits"][0]["properties"] = {"replicas": 3}
    comp["traits"][1]["properties"]["target"] = "kv"
    m = load(data)
    assert m.components[0].type == "component"
    assert m.components[0].scalers[0].properties.instances == 3
    assert m.components[0].links[0].target.name == "kv"


def test_scalar_values_are_taken_as_text() -> None:
    data = base()
    data["spec"]["components"][1]["properties"]["config"] = [
        {"name": "c", "properties": {"port": 8080, "tls": True, "ratio": 0.5}}
    ]
    m = load(data)
    assert m.components[1].properties.config[0].properties == {
        "port": "8080",
        "tls": "true",
        "ratio": "0.5",
    }


# -- warnings --------------------------------------------------------------------------


def with_link(namespace: str, package: str, interfaces: list[str], target: str = "kv") -> dict:
    data = base()
    data["spec"]["components"][0]["traits"][1]["properties"].update(
        namespace=namespace, package=package, interfaces=interfaces, target={"name": target}
    )
    return data


@pytest.mark.parametrize(
    "ns, pkg, ifaces",
    [
        ("wasi", "keyvalue", ["store", "atomics", "batch"]),
        ("wasi", "http", ["incoming-handler"]),
        ("wasi", "http", ["outgoing-handler"]),
        ("wasmcloud", "messaging", ["consumer", "handler"]),
        ("wasi", "config", ["store"]),
        ("wasi", "logging", ["logging"]),
        ("wasi", "blobstore", ["blobstore", "container", "types"]),
        ("lattice", "examples", ["greet"]),  # custom: not checked
        ("acme", "anything", ["goes"]),
    ],
)
def test_known_and_custom_interfaces_do_not_warn(ns: str, pkg: str, ifaces: list[str]) -> None:
    assert warnings_of(with_link(ns, pkg, ifaces)) == []


def test_unknown_interfaces_warn() -> None:
    (w,) = warnings_of(with_link("wasi", "keyvalue", ["store", "stor"]))
    assert w == (
        f"{C0}.traits[1].properties.interfaces[1]: wasi:keyvalue/stor is not a known interface "
        "of wasi:keyvalue (known: atomics, batch, store, watcher)"
    )
    (w,) = warnings_of(with_link("wasmcloud", "messagin", ["consumer", "handler"]))
    assert w.startswith(f"{C0}.traits[1].properties.package: wasmcloud:messagin is not a known")


def test_link_target_outside_the_manifest_warns() -> None:
    report = validate(with_link("wasi", "keyvalue", ["store"], target="shared-redis"))
    assert report.ok
    (w,) = report.warnings
    assert w.path == f"{C0}.traits[1].properties.target.name"
    assert "not a component in this manifest" in w.message


def test_other_warnings() -> None:
    data = base()
    del data["metadata"]["annotations"]["version"]
    del data["spec"]["components"][1]["traits"]
    data["spec"]["policies"] = [{"name": "p", "type": "x", "properties": {}}]
    data["spec"]["components"][0]["traits"][0]["properties"]["spread"] = [
        {"name": "east", "requirements": {"zone": "east"}},
        {"name": "gpu", "requirements": {"gpu": "yes"}},
        {"name": "west", "requirements": {"zone": "west"}, "weight": 0},
    ]
    report = validate(data)
    assert report.ok
    got = {w.path: w.message for w in report.warnings}
    assert got["metadata.annotations.version"].startswith("no version")
    assert got[f"{C1}.traits"].startswith("no spreadscaler or daemonscaler")
    assert got["spec.policies"].startswith("policies are not supported")
    assert "can match the same host" in got[f"{C0}.traits[0].properties.spread[1]"]
    assert "weight 0" in got[f"{C0}.traits[0].properties.spread[2].weight"]
    assert f"{C0}.traits[0].properties.spread[2]" not in got  # disjoint from east


def test_numeric_version_warns() -> None:
    text = yaml.safe_dump(base()).replace("version: v1", "version: 1.10")
    (w,) = validate(text).warnings
    assert w.path == "metadata.annotations.version" and "quote it" in w.message


def test_ids_and_config_names() -> None:
    assert naming.workload_id("My App", "Web Server") == "my-app-web-server"
    assert naming.workload_id("app", "x", "explicit-id") == "explicit-id"
    assert naming.config_name("kv", "Counter", "redis.url") == "kv-counter-redis-url"
    data = copy.deepcopy(base())
    data["spec"]["components"][1]["properties"]["id"] = "shared-kv"
    spec = compile_app(load(data))
    assert [w.id for w in spec.workloads] == ["demo-counter", "shared-kv"]
    assert spec.links[0].target == "shared-kv"
    assert spec.workloads[1].shared and not spec.workloads[0].shared


# -- never raises ----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    path=st.lists(
        st.sampled_from(
            [
                "spec",
                "components",
                0,
                1,
                "traits",
                "properties",
                "metadata",
                "name",
                "target",
                "spread",
                "config",
            ]
        ),
        min_size=1,
        max_size=6,
    ),
    value=json_values,
)
def test_validate_never_raises_on_mangled_manifests(path: list[Any], value: Any) -> None:
    data: Any = base()
    node = data
    for seg in path[:-1]:
        try:
            node = node[seg]
        except (KeyError, IndexError, TypeError):
            break
    with contextlib.suppress(TypeError, IndexError):
        node[path[-1]] = value
    report = validate(data)
    assert (report.manifest is not None) == report.ok
    for problem in report.errors + report.warnings:
        assert problem.path and problem.message


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80))
def test_validate_never_raises_on_text(text: str) -> None:
    report = validate(text)
    assert report.errors or report.manifest is not None
