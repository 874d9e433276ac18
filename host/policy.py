"""The host's side of the external policy service: ask, cache, fail closed.

`lattice up --policy-subject SUBJ` makes every link put this host stores and every
component it starts wait for a `PolicyResponse` from SUBJ (`lattice.protocol.policy`),
after the component's own capability policy (`lattice.policy`) has allowed it. Without
the flag nothing is asked and nothing waits.

Answers are cached per request (everything but its id) for `cache_ttl` seconds, permits
and denials alike, so a busy deployer costs the service one request per distinct change
per TTL; the clock is injectable so tests need not sleep. A service that does not answer
(no responders, `timeout`) or answers something that is not a `PolicyResponse` refuses
the change, with a message naming the subject; such failures are not cached.

The hot path never comes here: calls, config reads and outgoing HTTP are checked
against the policy record only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS

from lattice.artifacts import claims as signed
from lattice.protocol.policy import (
    PolicyAction,
    PolicyHost,
    PolicyRequest,
    PolicyRequester,
    PolicyResponse,
    PolicySource,
    PolicyTarget,
)

log = structlog.get_logger("lattice.policy")


@dataclass(frozen=True)
class PolicySettings:
    """`--policy-subject`, `--policy-timeout`, `--policy-cache-ttl`."""

    subject: str | None = None
    timeout: float = 1.0
    cache_ttl: float = 60.0

    def __post_init__(self) -> None:
        if self.subject is not None:
            if not self.subject or any(c.isspace() for c in self.subject):
                raise ValueError(f"--policy-subject {self.subject!r} is not a NATS subject")
            if any(t in ("*", ">") for t in self.subject.split(".")):
                raise ValueError(
                    f"--policy-subject {self.subject!r}: a request subject takes no wildcards"
                )
        if not 0 < self.timeout <= 60:
            raise ValueError(f"--policy-timeout must be in (0, 60] seconds, not {self.timeout}")
        if self.cache_ttl < 0:
            raise ValueError(f"--policy-cache-ttl must not be negative, not {self.cache_ttl}")


@dataclass
class PolicyGate:
    nc: NATS
    settings: PolicySettings
    host: Callable[[], PolicyHost]
    clock: Callable[[], float] = time.monotonic
    cache: dict[str, tuple[float, PolicyResponse]] = field(default_factory=dict)
    # what this host learnt of components it started: id -> (issuer, subject) of claims
    seen: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    # config names of the scale request being admitted, by component id
    starting: dict[str, tuple[str, ...]] = field(default_factory=dict)
    state: Any = None  # lattice.state.LatticeState: claims for hosts that did not start it

    @property
    def active(self) -> bool:
        return self.settings.subject is not None

    def source(self, component_id: str, image_ref: str | None = None) -> PolicySource:
        issuer, subject = self.seen.get(component_id, (None, None))
        return PolicySource(
            component_id=component_id, image_ref=image_ref, issuer=issuer, subject=subject
        )

    async def source_of(self, component_id: str) -> PolicySource:
        """The component with its claims as whichever host started it recorded them."""
        if component_id in self.seen or self.state is None:
            return self.source(component_id)
        try:
            found = await self.state.fetch_claims(component_id) or {}
        except Exception as exc:  # the decision goes on without them; the service sees null
            log.warning("could not read claims", component_id=component_id, error=str(exc))
            found = {}
        return PolicySource(
            component_id=component_id,
            image_ref=_text(found.get("image_ref")),
            issuer=_text(found.get("issuer")),
            subject=_text(found.get("subject")),
        )

    async def decide(
        self,
        action: PolicyAction,
        source: PolicySource,
        target: PolicyTarget,
        requester: PolicyRequester | None = None,
    ) -> str | None:
        """None when permitted (or no service is configured), else why not."""
        subject = self.settings.subject
        if subject is None:
            return None
        request = PolicyRequest(
            request_id=str(uuid.uuid4()),
            action=action,
            source=source,
            target=target,
            host=self.host(),
            requester=requester,
        )
        key = request.cache_key()
        now = self.clock()
        hit = self.cache.get(key)
        if hit is not None and hit[0] > now:
            answer = hit[1]
        else:
            what = f"{action.value} of {source.component_id}"
            try:
                msg = await self.nc.request(
                    subject, request.model_dump_json().encode(), timeout=self.settings.timeout
                )
            except nats.errors.NoRespondersError:
                return self._closed(subject, what, "nobody serves that subject (no responders)")
            except (nats.errors.TimeoutError, TimeoutError):
                return self._closed(subject, what, f"no answer within {self.settings.timeout:g} s")
            try:
                answer = PolicyResponse.model_validate_json(msg.data)
            except ValueError as exc:
                first = str(exc).splitlines()[0]
                return self._closed(subject, what, f"the answer is not a policy response ({first})")
            if self.settings.cache_ttl > 0:
                self.cache[key] = (now + self.settings.cache_ttl, answer)
        if answer.permitted:
            return None
        why = f": {answer.message}" if answer.message else ""
        return (
            f"{action.value} of {source.component_id} denied by the policy service "
            f"on {subject}{why}"
        )

    def _closed(self, subject: str, what: str, problem: str) -> str:
        log.warning("policy service unavailable; refusing", subject=subject, problem=problem)
        return (
            f"{what} refused: the policy service on {subject} is unavailable ({problem}); "
            "with --policy-subject set, changes are refused until it answers (fail closed)"
        )

    async def admit(self, component_id: str, ref: str, wasm: bytes) -> str | None:
        """The loader's hook, after fetching and before compiling: note the component's
        claims (for later link puts), ask the service about starting it."""
        try:  # hashes the module: off the loop
            claims = await asyncio.to_thread(signed.read, wasm)
        except Exception:  # unsigned, malformed or tampered: the issuer check says which
            claims = None
        issuer, subject = (claims.issuer, claims.subject) if claims is not None else (None, None)
        self.seen[component_id] = (issuer, subject)
        if self.state is not None:
            record = {"issuer": issuer, "subject": subject, "image_ref": ref}
            try:
                await self.state.put_claims(component_id, record)
            except Exception as exc:
                log.warning("could not record claims", component_id=component_id, error=str(exc))
        return await self.decide(
            PolicyAction.START_COMPONENT,
            self.source(component_id, ref),
            PolicyTarget(config=self.starting.pop(component_id, ())),
        )

    @classmethod
    def for_host(cls, host: Any) -> PolicyGate:
        """The gate of a started `host.host.Host` (its connection, flags, identity)."""
        settings: PolicySettings = host.config.policy

        def info() -> PolicyHost:
            return PolicyHost(
                host_id=host.host_id,
                lattice=host.lattice,
                labels=dict(host.labels),
                allowed_issuers=tuple(host.config.artifacts.allowed_issuers),
            )

        return cls(host.nc, settings, info, state=host.state)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
