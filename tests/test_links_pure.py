"""The pure link and config rules: identity, conflicts, secrets, resolution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from lattice.protocol.links import (
    REDACTED,
    Link,
    LinkPutRequest,
    NamedConfig,
    check_put,
    find_link,
    link_key,
    merge_config,
)


def link(**kw: object) -> LinkPutRequest:
    base = dict(
        source_id="counter",
        target="kv-redis",
        wit_namespace="wasi",
        wit_package="keyvalue",
        interfaces=["store", "atomics"],
    )
    base.update(kw)
    return LinkPutRequest.model_validate(base)


def test_second_target_needs_replace() -> None:
    existing = Link.model_validate(link().model_dump(exclude={"replace"}))
    refusal = check_put(link(target="kv-vault"), existing, [])
    assert refusal is not None and "replace" in refusal and "kv-redis" in refusal
    assert check_put(link(target="kv-vault", replace=True), existing, []) is None
    assert check_put(link(interfaces=["store"]), existing, []) is None  # same target: update


def test_missing_config_is_named() -> None:
    refusal = check_put(link(target_config=["redis-a", "nope"]), None, ["redis-a"])
    assert refusal == "link refers to config that does not exist: nope"


@pytest.mark.parametrize(
    "field, value",
    [
        ("source_id", "a.b"),
        ("target", ""),
        ("wit_namespace", "Wa si!"),
        ("interfaces", []),
        ("interfaces", ["st ore"]),
        ("name", "x y"),
    ],
)
def test_bad_link_fields_are_named(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        link(**{field: value})
    assert field in str(err.value)


def test_find_link_by_interface_and_name() -> None:
    a = Link.model_validate(link().model_dump(exclude={"replace"}))
    b = Link.model_validate(link(name="cache", target="kv-nats").model_dump(exclude={"replace"}))
    links = {a.identity: a, b.identity: b}
    assert find_link(links, "counter", "wasi", "keyvalue", "atomics", "default") == a
    assert find_link(links, "counter", "wasi", "keyvalue", "store", "cache") == b
    assert find_link(links, "counter", "wasi", "keyvalue", "batch", "default") is None
    assert find_link(links, "other", "wasi", "keyvalue", "store", "default") is None


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_link_keys_are_valid_kv_keys_and_distinct(a: str, b: str) -> None:
    ka, kb = link_key(a, "wasi", "keyvalue", "default"), link_key(b, "wasi", "keyvalue", "default")
    assert all(c.isalnum() or c in "-_=./" for c in ka)
    assert (ka == kb) == (a == b)


def test_secrets_are_kept_apart_and_redacted() -> None:
    cfg = NamedConfig.from_request({"addr": "http://v", "token": "s3cr3t", "$secrets": ["token"]})
    assert cfg.redacted() == {"addr": "http://v", "token": REDACTED}
    assert cfg.public() == {"addr": "http://v"}
    public, secret = merge_config(["v"], {"v": cfg})
    assert public == {"addr": "http://v"} and secret == {"token": "s3cr3t"}
    assert "s3cr3t" not in repr(cfg.redacted())


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"a": 1}, "a: config values must be strings"),
        ({"a": "x", "$secrets": "a"}, "$secrets"),
        ({"a": "x", "$secrets": ["b"]}, "b not among"),
    ],
)
def test_bad_config_bodies(body: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("$", r"\$")):
        NamedConfig.from_request(body)


def test_later_config_names_win() -> None:
    a = NamedConfig(values={"url": "a", "x": "1"})
    b = NamedConfig(values={"url": "b"})
    assert merge_config(["a", "b"], {"a": a, "b": b})[0] == {"url": "b", "x": "1"}
    assert merge_config(["a", "missing"], {"a": a})[0] == {"url": "a", "x": "1"}
