"""Host settings, as `lattice up` collects them from flags and LATTICE_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.policy import PolicySettings
from lattice import paths
from lattice.artifacts.claims import check_issuer
from lattice.natsauth import ANONYMOUS, NatsAuth
from lattice.protocol.subjects import check_token

default_data_dir = paths.default_data_dir  # where it always was, for its callers


@dataclass(frozen=True)
class Limits:
    """Execution limits applied to every component unless its scale request overrides them."""

    timeout_ms: int = 10_000
    memory_mb: int = 512

    def merged(self, timeout_ms: int | None, memory_mb: int | None) -> Limits:
        return Limits(
            timeout_ms=timeout_ms if timeout_ms is not None else self.timeout_ms,
            memory_mb=memory_mb if memory_mb is not None else self.memory_mb,
        )


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(name, "").split(",") if x.strip())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ArtifactSettings:
    """Where components may come from (`--allow-insecure-registry`, `--allow-latest`,
    `--no-shared-compile`, `--allowed-issuer`; also
    LATTICE_ALLOW_INSECURE_REGISTRY=host:port,…, LATTICE_ALLOW_LATEST=1,
    LATTICE_NO_SHARED_COMPILE=1, LATTICE_ALLOWED_ISSUERS=A…,A…, and
    LATTICE_REGISTRY_CONFIG=registry=config-name,… naming the named config that holds
    a registry's `username` and secret `password` or `token`)."""

    insecure_registries: tuple[str, ...] = ()
    allow_latest: bool = False
    shared_compile: bool = True
    registry_configs: dict[str, str] = field(default_factory=dict)
    allowed_issuers: tuple[str, ...] = ()  # non-empty: signed components only

    @classmethod
    def from_env(cls) -> ArtifactSettings:
        pairs = (item.partition("=") for item in _env_list("LATTICE_REGISTRY_CONFIG"))
        return cls(
            insecure_registries=_env_list("LATTICE_ALLOW_INSECURE_REGISTRY"),
            allow_latest=_env_flag("LATTICE_ALLOW_LATEST"),
            shared_compile=not _env_flag("LATTICE_NO_SHARED_COMPILE"),
            registry_configs={k.strip(): v.strip() for k, sep, v in pairs if sep},
            allowed_issuers=_env_list("LATTICE_ALLOWED_ISSUERS"),
        )


def artifact_settings(
    insecure: list[str] | None,
    allow_latest: bool,
    shared_compile: bool,
    allowed_issuers: list[str] | None = None,
) -> ArtifactSettings:
    """`lattice up`'s artifact flags over what the environment says (LATTICE_* variables
    that have no flag, such as LATTICE_REGISTRY_CONFIG, still apply)."""
    env = ArtifactSettings.from_env()
    hosts = tuple(h.strip() for item in insecure or [] for h in item.split(",") if h.strip())
    issuers = tuple(
        check_issuer(i) for item in allowed_issuers or [] for i in item.split(",") if i.strip()
    )
    return ArtifactSettings(
        insecure_registries=hosts or env.insecure_registries,
        allow_latest=allow_latest or env.allow_latest,
        shared_compile=shared_compile and env.shared_compile,
        registry_configs=env.registry_configs,
        allowed_issuers=issuers or tuple(check_issuer(i) for i in env.allowed_issuers),
    )


@dataclass(frozen=True)
class HostConfig:
    nats_url: str = "nats://127.0.0.1:4222"
    lattice: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    host_seed: str | None = None
    heartbeat_interval: float = 30.0
    data_dir: Path = field(default_factory=default_data_dir)
    limits: Limits = field(default_factory=Limits)
    embedded_nats: bool = True
    nats_connect_timeout: float = 5.0
    provider_health_interval: float = 30.0
    beat_interval: float = 1.0  # liveness beats (host/liveness.py); 0 turns them off
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings.from_env)
    admin_addr: str | None = None  # HOST:PORT for /livez, /readyz, /metrics (host/admin.py)
    compile_cache_dir: Path | None = None  # default {data_dir}/cache; may be shared
    http_in_host: bool = True  # builtin://http-server runs in this process (no NATS hop)
    nats_auth: NatsAuth = ANONYMOUS  # --creds/--nkey/--tls-* for every connection it makes
    account_signing_key: Path | None = None  # mint each provider its own NATS user
    embedded_config: Path | None = None  # --secure: the embedded server's auth config
    embedded_listen: str | None = None  # --secure: where the embedded server listens
    otlp_endpoint: str | None = None  # OTLP/HTTP receiver for spans (lattice/tracing.py)
    policy: PolicySettings = field(default_factory=PolicySettings)  # --policy-* (host/policy.py)
    workers: int = 1  # processes serving components behind this identity (host/workers.py)
    pin_cpus: bool = False  # each of those processes on a CPU of its own (host/workers.py)
    provider_sockets: bool = True  # link calls to its own provider processes skip NATS

    def __post_init__(self) -> None:
        check_token(self.lattice, "lattice name")
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat interval must be positive")
        if not 0 <= self.beat_interval <= 60:
            raise ValueError("beat interval must be between 0 (off) and 60 seconds")
        if not 1 <= self.workers <= 256:
            raise ValueError(f"--workers must be between 1 and 256, not {self.workers}")
        if self.otlp_endpoint:
            from lattice.tracing import traces_url

            traces_url(self.otlp_endpoint)  # a bad URL fails here, named, not at start

    @property
    def cache_dir(self) -> Path:
        """Compiled components. Hosts on one machine may share one (LATTICE_COMPILE_CACHE):
        entries are keyed by digest and engine and written atomically."""
        return self.compile_cache_dir or self.data_dir / "cache"


def signing_of(config: HostConfig) -> tuple[Any, str] | None:
    """(signing key, account) from `--account-signing-key` and the host's own .creds;
    ValueError naming what is wrong or missing."""
    if config.account_signing_key is None:
        return None
    from lattice.natsjwt import JwtError, Key

    path = config.account_signing_key
    try:
        key = Key.from_seed(Path(path).read_text(), "A")
    except OSError as exc:
        raise ValueError(f"--account-signing-key {path}: {exc.strerror}") from None
    except JwtError as exc:
        raise ValueError(f"--account-signing-key {path}: {exc}") from None
    try:
        account = config.nats_auth.account()
    except JwtError as exc:
        raise ValueError(f"--creds {config.nats_auth.creds}: {exc}") from None
    if account is None:
        raise ValueError("--account-signing-key needs --creds (a user of the account it signs for)")
    return key, account


def parse_labels(items: list[str]) -> dict[str, str]:
    """`["zone=a", "gpu=true"]` → dict; refuses malformed items and reserved keys."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"label {item!r} must look like key=value")
        if key.startswith("hostcore."):
            raise ValueError(f"label {key!r}: keys starting with 'hostcore.' are set by the host")
        labels[key] = value
    return labels
