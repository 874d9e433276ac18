"""Decision requests to an external policy service, and its answers (JSON over NATS).

A host started with `--policy-subject SUBJ` asks `SUBJ` (NATS request/reply) before it
stores a link (`put_link`) and before it runs a component (`start_component`), after
its own capability policy (`lattice.policy`) has allowed the change. The shape follows
wasmCloud v1's policy topic (crates/host/src/policy.rs: `requestId`, `source`,
`target`, `host`, `action`; answer `requestId`, `permitted`, `message`), in our
snake_case, and adds who is asking in every request:

- `source`: the component the decision is about — its id, and when the host has seen
  its bytes, the issuer and subject of its signed claims (`lattice sign`);
- `host`: the host asking (id, lattice, labels, the issuers it allows);
- `requester`: for `put_link`, the identity that sent the request — the public key the
  client signed it with (`verified: true`), or what it claims without a signature.

The host caches each answer (permit or deny) for `--policy-cache-ttl` seconds, keyed by
everything in the request but its id. No answer (no responders, a timeout) or one that
does not parse refuses the change: the policy fails closed.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1


class PolicyAction(StrEnum):
    PUT_LINK = "put_link"
    START_COMPONENT = "start_component"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PolicySource(_Msg):
    """The component a decision is about."""

    component_id: str
    image_ref: str | None = None
    issuer: str | None = None  # its claims' `iss` (an account, A…), when signed
    subject: str | None = None  # its claims' `sub` (the component's own key, M…)


class PolicyTarget(_Msg):
    """What the component would get: a link's target and interfaces, its config."""

    target_id: str | None = None
    wit_namespace: str | None = None
    wit_package: str | None = None
    interfaces: tuple[str, ...] = ()
    link_name: str | None = None
    config: tuple[str, ...] = ()


class PolicyHost(_Msg):
    host_id: str
    lattice: str
    labels: dict[str, str] = Field(default_factory=dict)
    allowed_issuers: tuple[str, ...] = ()


class PolicyRequester(_Msg):
    """Who asked for the change (`put_link`)."""

    identity: str = "anonymous"
    verified: bool = False  # the request carried a valid signature by `identity`


class PolicyRequest(_Msg):
    v: int = PROTOCOL_VERSION
    request_id: str
    action: PolicyAction
    source: PolicySource
    target: PolicyTarget = PolicyTarget()
    host: PolicyHost
    requester: PolicyRequester | None = None

    def cache_key(self) -> str:
        """Everything that may change the answer: all of it but the request id."""
        return self.model_dump_json(exclude={"request_id"})


class PolicyResponse(_Msg):
    request_id: str = ""
    permitted: bool
    message: str | None = None
