"""The control interface: one routing table from subject tokens to typed handlers.

Subscriptions (see `subscriptions`):
- `wasmbus.ctl.v1.{lattice}.*.*.{host_id}`: operations addressed to this host. A wrong
  host id reaches nobody, so the client gets NATS "no responders" at once.
- `host.ping`, `component.auction`, `provider.auction`: every host hears them; auctions
  are answered only by hosts whose labels satisfy the constraints.
- `wasmbus.ctl.v1.{lattice}.*.*` in a queue group: exactly one host answers operations
  served lattice-wide, and tells the client when a subject is unknown or lacks its
  host id — never silence.

Every handler gets the raw body, validates it into a protocol model, and returns a
`CtlReply`, or None to stay silent. A handler never raises to NATS: anything
unexpected becomes `success: false` with the reason.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import structlog
from nats.aio.msg import Msg

from host.providers import ProviderError
from lattice import policy
from lattice.protocol import envelope, subjects
from lattice.protocol.envelope import CtlReply
from lattice.protocol.links import (
    LinkDelRequest,
    LinkPutRequest,
    LinkResolveRequest,
    NamedConfig,
    config_key,
)
from lattice.protocol.messages import (
    ComponentAuctionAck,
    ComponentAuctionRequest,
    HostStopRequest,
    LabelDelRequest,
    LabelPutRequest,
    ProviderAuctionRequest,
    RequestError,
    ScaleComponentRequest,
    StartProviderRequest,
    StopProviderRequest,
    UpdateComponentRequest,
    parse,
)
from lattice.protocol.policy import PolicyAction, PolicyRequester, PolicyTarget
from lattice.state import StateError

if TYPE_CHECKING:
    from host.host import Host

log = structlog.get_logger("lattice.ctl")

Handler = Callable[["ControlInterface", bytes, str | None], Awaitable[CtlReply | None]]

# the message being handled: who asked is in its headers (lattice.policy.requester_of)
_current: contextvars.ContextVar[Msg | None] = contextvars.ContextVar("ctl_msg", default=None)


class Scope(Enum):
    HOST = "host"  # subject ends with this host's id
    BROADCAST = "broadcast"  # every host hears and may answer
    LATTICE = "lattice"  # shared state: exactly one host (a queue group) answers
    NAMED = "named"  # like LATTICE, with a name as the last token (config.put.{name})


@dataclass(frozen=True)
class Route:
    scope: Scope
    handler: Handler


class ControlInterface:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._tasks: set[asyncio.Task[None]] = set()

    # -- subscriptions --------------------------------------------------------

    def subscriptions(self) -> list[tuple[str, str | None, Callable[[Msg], Awaitable[None]]]]:
        """(subject, queue group, callback) for every control subscription of this host."""
        lat, hid = self.host.lattice, self.host.host_id
        direct = self._callback(lattice_wide=False)
        subs: list[tuple[str, str | None, Callable[[Msg], Awaitable[None]]]] = [
            (f"{subjects.CTL_PREFIX}.{lat}.*.*.{hid}", None, direct)
        ]
        subs += [
            (subjects.ctl(lat, *op.split(".")), None, direct)
            for op, r in ROUTES.items()
            if r.scope is Scope.BROADCAST
        ]
        shared = self._callback(lattice_wide=True)
        subs.append((f"{subjects.CTL_PREFIX}.{lat}.*.*", f"ctl.{lat}", shared))
        for op, r in ROUTES.items():
            if r.scope is Scope.NAMED:
                subs.append((subjects.ctl(lat, *op.split("."), "*"), f"ctl.{lat}", shared))
        return subs

    def _callback(self, lattice_wide: bool) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            _current.set(msg)
            reply = await self.dispatch(msg.subject, msg.data, lattice_wide=lattice_wide)
            if reply is not None and msg.reply:
                await self.host.nc.publish(msg.reply, reply.to_bytes())

        return on_message

    async def dispatch(
        self, subject: str, data: bytes, *, lattice_wide: bool = False
    ) -> CtlReply | None:
        """Route one control message; `lattice_wide` marks the queue-group subscription,
        whose job is only what no per-host or broadcast subscription answers."""
        parsed = subjects.parse_ctl(subject)
        if parsed is None or parsed.lattice != self.host.lattice:
            return None
        route = ROUTES.get(parsed.operation)
        if route is not None:
            shared = route.scope in (Scope.LATTICE, Scope.NAMED)
            if lattice_wide and route.scope is Scope.BROADCAST:
                return None
            if not lattice_wide and shared:
                return None  # the queue-group subscription answers these
        if route is None:
            if parsed.target is not None and parsed.target != self.host.host_id:
                return None
            known = ", ".join(sorted(ROUTES))
            return envelope.fail(
                f"unknown control operation {parsed.operation!r} on {subject}; "
                f"this host serves: {known}"
            )
        if route.scope is Scope.HOST:
            if parsed.target is None:
                return envelope.fail(
                    f"{parsed.operation} must be addressed to a host: "
                    f"{subjects.ctl(parsed.lattice, parsed.noun, parsed.verb, '<host_id>')}"
                )
            if parsed.target != self.host.host_id:
                return None
        elif route.scope is Scope.NAMED:
            if parsed.target is None:
                return envelope.fail(
                    f"{parsed.operation} needs a name: "
                    f"{subjects.ctl(parsed.lattice, parsed.noun, parsed.verb, '<name>')}"
                )
        elif parsed.target is not None:
            return envelope.fail(f"{parsed.operation} takes no host id in its subject")
        try:
            return await route.handler(self, data, parsed.target)
        except (RequestError, StateError) as exc:
            return envelope.fail(f"invalid {parsed.operation} request: {exc}")
        except Exception as exc:
            log.exception("control handler failed", operation=parsed.operation)
            return envelope.fail(f"{parsed.operation} failed: {type(exc).__name__}: {exc}")

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handlers -------------------------------------------------------------

    async def host_ping(self, data: bytes, target: str | None) -> CtlReply:
        return envelope.ok(self.host.ping().model_dump())

    async def host_get(self, data: bytes, target: str | None) -> CtlReply:
        return envelope.ok(self.host.inventory().model_dump())

    async def host_stop(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(HostStopRequest, data) if data.strip() else HostStopRequest()
        self._background(self.host.request_stop("stop requested over the control interface"))
        return envelope.ok(
            message=f"host {self.host.host_id} is stopping", response=req.model_dump()
        )

    async def component_scale(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(ScaleComponentRequest, data)
        refusal = self.host.components.check_scale(req)
        if refusal is None and req.count > 0:
            found = await self._policy(req.component_id)
            refusal = policy.check_config(found, req.config, "component start")
        if refusal is not None:
            return envelope.fail(refusal)
        if self.host.policy.active:  # the policy service hears of the config at admission
            self.host.policy.starting[req.component_id] = tuple(req.config)
        self._background(self.host.components.scale(req))
        return envelope.ok(message=f"scaling {req.component_id} to {req.count}")

    async def component_update(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(UpdateComponentRequest, data)
        if req.component_id not in self.host.components.running:
            return envelope.fail(f"component {req.component_id} is not running on this host")
        self._background(self.host.components.update(req))
        return envelope.ok(message=f"updating {req.component_id} to {req.new_component_ref}")

    async def component_auction(self, data: bytes, target: str | None) -> CtlReply | None:
        req = parse(ComponentAuctionRequest, data)
        labels = self.host.labels
        if any(labels.get(k) != v for k, v in req.constraints.items()):
            return None
        if req.component_id in self.host.components.running:
            return None
        ack = ComponentAuctionAck(
            component_ref=req.component_ref,
            component_id=req.component_id,
            constraints=req.constraints,
            host_id=self.host.host_id,
        )
        return envelope.ok(ack.model_dump())

    async def label_put(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(LabelPutRequest, data)
        await self.host.set_label(req.key, req.value)
        return envelope.ok(message=f"label {req.key} set")

    async def label_del(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(LabelDelRequest, data)
        if req.key not in self.host.labels:
            return envelope.fail(f"label {req.key!r} is not set on this host")
        await self.host.set_label(req.key, None)
        return envelope.ok(message=f"label {req.key} removed")

    async def provider_start(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(StartProviderRequest, data)
        self._background(self.host.providers.start(req))
        return envelope.ok(message=f"starting provider {req.provider_id}")

    async def provider_stop(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(StopProviderRequest, data)
        if req.provider_id not in self.host.providers.running:
            return envelope.fail(f"provider {req.provider_id} is not running on this host")
        self._background(self.host.providers.stop(req.provider_id))
        return envelope.ok(message=f"stopping provider {req.provider_id}")

    async def provider_auction(self, data: bytes, target: str | None) -> CtlReply | None:
        req = parse(ProviderAuctionRequest, data)
        labels = self.host.labels
        if any(labels.get(k) != v for k, v in req.constraints.items()):
            return None
        if req.provider_id in self.host.providers.running:
            return None
        return envelope.ok({**req.model_dump(), "host_id": self.host.host_id})

    async def link_put(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(LinkPutRequest, data)
        try:
            refusal = await self._link_refusal(req, data)
            if refusal is not None:
                raise StateError(refusal)
            link = await self.host.state.put_link(req, prepare=self.host.providers.prepare_link)
        except StateError as exc:
            await self.host.publish_event(
                "linkdef_set_failed", {**req.model_dump(exclude={"replace"}), "error": str(exc)}
            )
            return envelope.fail(str(exc))
        await self.host.publish_event("linkdef_set", link.model_dump())
        return envelope.ok(message=f"link {link.describe()} set")

    async def _policy(self, component_id: str) -> policy.ComponentPolicy | None:
        """The component's capability policy as the bucket holds it now: the controller
        writes it a moment before the link put or scale, maybe through another host."""
        try:
            name = policy.record_name(component_id)
        except policy.PolicyError:
            return None  # an id no policy can be written for
        fresh = await self.host.state.fetch_configs([name])
        return policy.policy_of(fresh, component_id)

    async def _link_refusal(self, req: LinkPutRequest, data: bytes) -> str | None:
        """Why the source's capability policy, or the policy service, refuses `req`."""
        refusal = policy.check_link(await self._policy(req.source_id), req)
        gate = self.host.policy
        if refusal is not None or not gate.active:
            return refusal
        msg = _current.get()
        subject = msg.subject if msg is not None else ""
        who, verified = policy.requester_of(
            msg.headers if msg is not None else None, subject, data, time.time()
        )
        return await gate.decide(
            PolicyAction.PUT_LINK,
            await gate.source_of(req.source_id),
            PolicyTarget(
                target_id=req.target,
                wit_namespace=req.wit_namespace,
                wit_package=req.wit_package,
                interfaces=tuple(req.interfaces),
                link_name=req.name,
                config=tuple(req.source_config),
            ),
            PolicyRequester(identity=who, verified=verified),
        )

    async def link_del(self, data: bytes, target: str | None) -> CtlReply:
        req = parse(LinkDelRequest, data)
        gone = await self.host.state.del_link(req)
        if gone is None:
            return envelope.fail(
                f"no link from {req.source_id} for {req.wit_namespace}:{req.wit_package} "
                f"with link name {req.name}"
            )
        await self.host.publish_event("linkdef_deleted", gone.model_dump())
        return envelope.ok(message=f"link {gone.describe()} deleted")

    async def link_get(self, data: bytes, target: str | None) -> CtlReply:
        return envelope.ok(self.host.state.links_json())

    async def link_resolve(self, data: bytes, target: str | None) -> CtlReply:
        """A provider of this host was called over a link it does not hold (hand-off)."""
        req = parse(LinkResolveRequest, data)
        try:
            link = await self.host.providers.resolve_link(req)
        except ProviderError as exc:
            return envelope.fail(str(exc))
        return envelope.ok({"link": link})

    async def config_put(self, data: bytes, target: str | None) -> CtlReply:
        assert target is not None
        try:
            config_key(target)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        try:
            body = json.loads(data) if data.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object of string values")
        try:
            cfg = NamedConfig.from_request(body)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        refusal = policy.check_record(target, cfg.values)
        if refusal is not None:
            raise RequestError(refusal)
        await self.host.state.put_config(target, cfg)
        await self.host.publish_event("config_set", {"config_name": target})
        return envelope.ok(message=f"config {target} set")

    async def config_get(self, data: bytes, target: str | None) -> CtlReply:
        assert target is not None
        cfg = self.host.state.config(target)
        if cfg is None:
            return envelope.fail(f"no config named {target!r}")
        return envelope.ok(cfg.redacted())

    async def config_del(self, data: bytes, target: str | None) -> CtlReply:
        assert target is not None
        if not await self.host.state.del_config(target):
            return envelope.fail(f"no config named {target!r}")
        await self.host.publish_event("config_deleted", {"config_name": target})
        return envelope.ok(message=f"config {target} deleted")

    async def wait_background(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


ROUTES: dict[str, Route] = {
    "host.ping": Route(Scope.BROADCAST, ControlInterface.host_ping),
    "host.get": Route(Scope.HOST, ControlInterface.host_get),
    "host.stop": Route(Scope.HOST, ControlInterface.host_stop),
    "component.scale": Route(Scope.HOST, ControlInterface.component_scale),
    "component.update": Route(Scope.HOST, ControlInterface.component_update),
    "component.auction": Route(Scope.BROADCAST, ControlInterface.component_auction),
    "label.put": Route(Scope.HOST, ControlInterface.label_put),
    "label.del": Route(Scope.HOST, ControlInterface.label_del),
    "provider.start": Route(Scope.HOST, ControlInterface.provider_start),
    "provider.stop": Route(Scope.HOST, ControlInterface.provider_stop),
    "provider.auction": Route(Scope.BROADCAST, ControlInterface.provider_auction),
    "link.put": Route(Scope.LATTICE, ControlInterface.link_put),
    "link.del": Route(Scope.LATTICE, ControlInterface.link_del),
    "link.get": Route(Scope.LATTICE, ControlInterface.link_get),
    "link.resolve": Route(Scope.HOST, ControlInterface.link_resolve),
    "config.put": Route(Scope.NAMED, ControlInterface.config_put),
    "config.get": Route(Scope.NAMED, ControlInterface.config_get),
    "config.del": Route(Scope.NAMED, ControlInterface.config_del),
}
