"""The async control client used by the CLI, the tests and (later) the controller.

It speaks only the protocol package's messages. Failures come back as `LatticeError`
with a sentence a person can act on: no host answered, the host refused and why, or
the call failed at the component (an `InvocationError` with its kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import nats
import nats.js.api
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from lattice import codec, natsauth, natsd, natsjwt, policy
from lattice.natsauth import NatsAuth
from lattice.protocol import subjects
from lattice.protocol.envelope import CtlReply
from lattice.protocol.invocation import (
    ERROR_HEADER,
    HOST_HEADER,
    SOURCE_HEADER,
    TRACEPARENT_HEADER,
    InvocationError,
)
from lattice.protocol.messages import HostInventory, HostPing


def new_traceparent() -> str:
    """A W3C trace context for a call that starts here (version 00, sampled)."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def signer_of(auth: NatsAuth) -> natsjwt.Key | None:
    """The user nkey in `auth` (a .creds file's or an --nkey seed), None when anonymous."""
    with contextlib.suppress(Exception):  # unreadable keys were reported at connect
        seed = (auth.credentials() or {}).get("seed")
        if seed:
            return natsjwt.Key.from_seed(seed, "U")
    return None


class LatticeError(RuntimeError):
    """A control or call failure, worded for the user."""


class WaitTimeout(LatticeError):
    """A command was acknowledged but its outcome event did not arrive in time; the
    message names what did not happen (the CLI exits with code 3 for it)."""


EventMatch = Callable[[dict[str, Any]], bool]

# Seconds a controller request is resent while no controller answers (one restarting,
# or a standby taking over), before the user is told none runs.
NO_CONTROLLER_GRACE = 2.0
CLOSE_TIMEOUT_S = 3.0  # for the connection to close before it is dropped


def _link_match(source_id: str, namespace: str, package: str, name: str) -> EventMatch:
    def match(d: dict[str, Any]) -> bool:
        return (
            d.get("source_id") == source_id
            and d.get("wit_namespace") == namespace
            and d.get("wit_package") == package
            and d.get("name", "default") == name
        )

    return match


class LatticeClient:
    def __init__(
        self,
        nc: NATS,
        lattice: str = "default",
        timeout: float = 5.0,
        signer: natsjwt.Key | None = None,
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout = timeout
        # the user nkey that signs control requests, so a policy service knows who asked
        self.signer = signer

    @classmethod
    async def connect(
        cls,
        url: str,
        lattice: str = "default",
        timeout: float = 5.0,
        creds: str | None = None,
        auth: NatsAuth | None = None,
        tls_ca: str | None = None,
    ) -> LatticeClient:
        """`auth` (default: `creds`, `tls_ca` and the LATTICE_NATS_* / LATTICE_TLS_*
        variables)."""

        async def quiet(exc: Exception) -> None:
            """nats-py logs a traceback per failed attempt by default; we report once."""

        try:
            auth = auth or NatsAuth.from_values(creds=creds, tls_ca=tls_ca)
            if not await natsd.answers(url, timeout=min(timeout, 5.0)):
                raise ConnectionRefusedError(url)
            nc = await natsauth.connect(
                url,
                auth,
                connect_timeout=min(timeout, 5.0),
                max_reconnect_attempts=0,
                allow_reconnect=False,
                name="lattice-cli",
                error_cb=quiet,
            )
        except (natsauth.NatsConnectError, ValueError) as exc:
            raise LatticeError(str(exc)) from None
        except (Exception, TimeoutError) as exc:
            raise LatticeError(
                f"cannot reach NATS at {url} ({type(exc).__name__}); is `lattice up` running?"
            ) from None
        return cls(nc, lattice, timeout, signer_of(auth))

    async def close(self) -> None:
        """Bounded: nats-py's close waits on the server (a flush), and a Ctrl-C'd CLI must
        exit even when the server is slow to answer or gone."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.close(), CLOSE_TIMEOUT_S)

    async def __aenter__(self) -> LatticeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- control requests -----------------------------------------------------

    async def request(self, subject: str, body: dict[str, Any] | None = None) -> CtlReply:
        data = json.dumps(body or {}).encode()
        headers = None
        if self.signer is not None:  # who asks (lattice/policy.py): a signature, no secret
            headers = policy.requester_headers(self.signer, subject, data, time.time())
        try:
            msg = await self._request_once_more(subject, data, headers)
        except NoRespondersError:
            raise LatticeError(f"nobody answers on {subject}: is the host id right?") from None
        except NatsTimeout:
            raise LatticeError(f"no answer on {subject} within {self.timeout:g}s") from None
        try:
            reply = CtlReply.from_bytes(msg.data)
        except ValueError:
            raise LatticeError(f"malformed reply on {subject}: {msg.data[:200]!r}") from None
        if not reply.success:
            raise LatticeError(reply.message)
        return reply

    async def _request_once_more(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> Any:
        """A request that asks once more, 0.1 s later, after "no responders": a host that
        has just subscribed may not be known everywhere yet. Still fails within ~0.1 s."""
        try:
            return await self.nc.request(subject, data, timeout=self.timeout, headers=headers)
        except NoRespondersError:
            await asyncio.sleep(0.1)
            return await self.nc.request(subject, data, timeout=self.timeout, headers=headers)

    async def _collect(
        self, subject: str, body: dict[str, Any], wait: float
    ) -> AsyncIterator[CtlReply]:
        """Publish once and yield every reply as it arrives, until `wait` seconds pass."""
        inbox = self.nc.new_inbox()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_reply(msg: Any) -> None:
            await queue.put(msg.data)

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            await self.nc.publish(subject, json.dumps(body).encode(), reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while (remaining := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                with contextlib.suppress(ValueError):
                    reply = CtlReply.from_bytes(data)
                    if reply.success:
                        yield reply
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def stream_hosts(
        self, wait: float = 1.5, expect: int | None = None
    ) -> AsyncIterator[HostPing]:
        """Hosts as they answer `host.ping`; stops early once `expect` have answered."""
        seen = 0
        async for reply in self._collect(subjects.ctl(self.lattice, "host", "ping"), {}, wait):
            yield HostPing.model_validate(reply.response)
            seen += 1
            if expect is not None and seen >= expect:
                return

    async def hosts(self, wait: float = 1.5, expect: int | None = None) -> list[HostPing]:
        return [h async for h in self.stream_hosts(wait, expect)]

    async def inventory(self, host_id: str) -> HostInventory:
        reply = await self.request(subjects.ctl(self.lattice, "host", "get", host_id))
        return HostInventory.model_validate(reply.response)

    async def auction_component(
        self,
        ref: str,
        component_id: str,
        constraints: dict[str, str] | None = None,
        wait: float = 1.0,
    ) -> list[str]:
        body = {
            "component_ref": ref,
            "component_id": component_id,
            "constraints": constraints or {},
        }
        subject = subjects.ctl(self.lattice, "component", "auction")
        return [r.response["host_id"] async for r in self._collect(subject, body, wait)]

    async def stop_host(self, host_id: str, *, wait: float | None = None) -> str:
        """Ask a host to stop; with `wait`, until it announces `host_stopped`."""
        return await self._change(
            subjects.ctl(self.lattice, "host", "stop", host_id),
            {},
            wait,
            f"host {host_id} stopped",
            ok="host_stopped",
            match=lambda d: d.get("host_id") == host_id,
            what=f"host {host_id}",
        )

    async def put_label(
        self, host_id: str, key: str, value: str, *, wait: float | None = None
    ) -> dict[str, Any]:
        """Set a label; with `wait`, until the host announces `labels_changed`."""
        return await self.command(
            subjects.ctl(self.lattice, "label", "put", host_id),
            {"key": key, "value": value},
            wait,
            ok="labels_changed",
            failed=None,
            match=lambda d: d.get("host_id") == host_id and d.get("labels", {}).get(key) == value,
            what=f"label {key}",
            where=f" from host {host_id}",
        )

    async def del_label(
        self, host_id: str, key: str, *, wait: float | None = None
    ) -> dict[str, Any]:
        return await self.command(
            subjects.ctl(self.lattice, "label", "del", host_id),
            {"key": key},
            wait,
            ok="labels_changed",
            failed=None,
            match=lambda d: d.get("host_id") == host_id and key not in d.get("labels", {}),
            what=f"label {key}",
            where=f" from host {host_id}",
        )

    async def scale_component(
        self,
        host_id: str,
        ref: str,
        component_id: str,
        count: int,
        *,
        annotations: dict[str, str] | None = None,
        config: list[str] | None = None,
        limits: dict[str, int] | None = None,
        allow_update: bool = False,
        wait: float | None = 60.0,
    ) -> dict[str, Any]:
        """Scale and, unless `wait` is None, wait for the outcome event; returns its data."""
        body: dict[str, Any] = {
            "component_ref": ref,
            "component_id": component_id,
            "count": count,
            "annotations": annotations or {},
            "config": config or [],
            "allow_update": allow_update,
        }
        if limits:
            body["limits"] = limits
        subject = subjects.ctl(self.lattice, "component", "scale", host_id)
        return await self._request_and_wait(subject, body, host_id, component_id, wait)

    async def update_component(
        self, host_id: str, component_id: str, new_ref: str, *, wait: float | None = 60.0
    ) -> dict[str, Any]:
        body = {"component_id": component_id, "new_component_ref": new_ref}
        subject = subjects.ctl(self.lattice, "component", "update", host_id)
        return await self._request_and_wait(subject, body, host_id, component_id, wait)

    async def _request_and_wait(
        self,
        subject: str,
        body: dict[str, Any],
        host_id: str,
        component_id: str,
        wait: float | None,
        *,
        key: str = "component_id",
        ok: str = "component_scaled",
        failed: str = "component_scale_failed",
    ) -> dict[str, Any]:
        """Send a command and wait for the event that reports its outcome on that host."""

        def ours(data: dict[str, Any]) -> bool:
            return data.get("host_id") == host_id and data.get(key) == component_id

        return await self.command(
            subject,
            body,
            wait,
            ok=ok,
            failed=failed,
            match=ours,
            what=component_id,
            where=f" from host {host_id}",
        )

    async def _change(
        self,
        subject: str,
        body: dict[str, Any],
        wait: float | None,
        done: str,
        *,
        ok: str,
        failed: str | None = None,
        match: EventMatch,
        what: str,
    ) -> str:
        """A change whose answer is a sentence: the acknowledgement's when not waiting,
        else `done` once the outcome event came."""
        if wait is None:
            return (await self.request(subject, body)).message
        await self.command(subject, body, wait, ok=ok, failed=failed, match=match, what=what)
        return done

    async def command(
        self,
        subject: str,
        body: dict[str, Any],
        wait: float | None,
        *,
        ok: str,
        failed: str | None,
        match: EventMatch,
        what: str,
        where: str = "",
    ) -> dict[str, Any]:
        """Send a control request; unless `wait` is None, wait for the first `ok` or
        `failed` event whose data `match`es and return its data. The subscription is made
        before the request, so an event sent with the acknowledgement is not missed.
        A failure event raises LatticeError with its reason; no event in time raises
        WaitTimeout naming the event that did not come."""
        if wait is None:
            reply = await self.request(subject, body)
            return {"message": reply.message}
        outcome: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        async def on_event(msg: Any) -> None:
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                ev = json.loads(msg.data)
                if match(ev["data"]) and not outcome.done():
                    outcome.set_result(ev)

        types = [ok] if failed is None else [ok, failed]
        subs = [
            await self.nc.subscribe(subjects.event(self.lattice, t), cb=on_event) for t in types
        ]
        try:
            await self.request(subject, body)
            try:
                ev = await asyncio.wait_for(outcome, wait)
            except TimeoutError:
                raise WaitTimeout(f"{what}: no {ok} event{where} within {wait:g}s") from None
        finally:
            for s in subs:
                with contextlib.suppress(Exception):
                    await s.unsubscribe()
        if failed is not None and ev["type"].endswith(failed):
            raise LatticeError(f"{what}: {ev['data'].get('error', 'failed')}")
        return dict(ev["data"])

    # -- providers ------------------------------------------------------------

    async def start_provider(
        self,
        host_id: str,
        ref: str,
        provider_id: str,
        *,
        config: list[str] | None = None,
        annotations: dict[str, str] | None = None,
        wait: float | None = 60.0,
    ) -> dict[str, Any]:
        body = {
            "provider_ref": ref,
            "provider_id": provider_id,
            "config": config or [],
            "annotations": annotations or {},
        }
        subject = subjects.ctl(self.lattice, "provider", "start", host_id)
        return await self._request_and_wait(
            subject,
            body,
            host_id,
            provider_id,
            wait,
            key="provider_id",
            ok="provider_started",
            failed="provider_start_failed",
        )

    async def stop_provider(
        self, host_id: str, provider_id: str, *, wait: float | None = 30.0
    ) -> dict[str, Any]:
        subject = subjects.ctl(self.lattice, "provider", "stop", host_id)
        return await self._request_and_wait(
            subject,
            {"provider_id": provider_id},
            host_id,
            provider_id,
            wait,
            key="provider_id",
            ok="provider_stopped",
            failed="provider_stop_failed",
        )

    async def auction_provider(
        self,
        ref: str,
        provider_id: str,
        constraints: dict[str, str] | None = None,
        wait: float = 1.0,
    ) -> list[str]:
        body = {"provider_ref": ref, "provider_id": provider_id, "constraints": constraints or {}}
        subject = subjects.ctl(self.lattice, "provider", "auction")
        return [r.response["host_id"] async for r in self._collect(subject, body, wait)]

    # -- links and config -----------------------------------------------------

    async def put_link(
        self,
        source_id: str,
        target: str,
        namespace: str,
        package: str,
        interfaces: list[str],
        *,
        name: str = "default",
        source_config: list[str] | None = None,
        target_config: list[str] | None = None,
        replace: bool = False,
        wait: float | None = None,
    ) -> str:
        """Put a link; with `wait`, until `linkdef_set` (or `linkdef_set_failed`)."""
        body = {
            "source_id": source_id,
            "target": target,
            "name": name,
            "wit_namespace": namespace,
            "wit_package": package,
            "interfaces": interfaces,
            "source_config": source_config or [],
            "target_config": target_config or [],
            "replace": replace,
        }
        what = f"link {source_id} {namespace}:{package} ({name})"
        return await self._change(
            subjects.ctl(self.lattice, "link", "put"),
            body,
            wait,
            f"{what} → {target} set",
            ok="linkdef_set",
            failed="linkdef_set_failed",
            match=_link_match(source_id, namespace, package, name),
            what=what,
        )

    async def del_link(
        self,
        source_id: str,
        namespace: str,
        package: str,
        name: str = "default",
        *,
        wait: float | None = None,
    ) -> str:
        body = {
            "source_id": source_id,
            "wit_namespace": namespace,
            "wit_package": package,
            "name": name,
        }
        what = f"link {source_id} {namespace}:{package} ({name})"
        return await self._change(
            subjects.ctl(self.lattice, "link", "del"),
            body,
            wait,
            f"{what} deleted",
            ok="linkdef_deleted",
            match=_link_match(source_id, namespace, package, name),
            what=what,
        )

    async def get_links(self) -> list[dict[str, Any]]:
        reply = await self.request(subjects.ctl(self.lattice, "link", "get"))
        return list(reply.response or [])

    async def put_config(
        self,
        name: str,
        values: dict[str, str],
        secrets: list[str] | None = None,
        *,
        wait: float | None = None,
    ) -> str:
        body: dict[str, Any] = dict(values)
        if secrets:
            body["$secrets"] = secrets
        return await self._change(
            subjects.ctl(self.lattice, "config", "put", name),
            body,
            wait,
            f"config {name} set",
            ok="config_set",
            match=lambda d: d.get("config_name") == name,
            what=f"config {name}",
        )

    async def get_config(self, name: str) -> dict[str, str]:
        reply = await self.request(subjects.ctl(self.lattice, "config", "get", name))
        return dict(reply.response or {})

    async def del_config(self, name: str, *, wait: float | None = None) -> str:
        return await self._change(
            subjects.ctl(self.lattice, "config", "del", name),
            {},
            wait,
            f"config {name} deleted",
            ok="config_deleted",
            match=lambda d: d.get("config_name") == name,
            what=f"config {name}",
        )

    async def list_configs(self) -> dict[str, dict[str, str]]:
        """Every named config, secret values as ***, read from the lattice's config
        bucket (the control interface answers for one name at a time)."""
        from lattice.kvkeys import bucket_keys
        from lattice.protocol.links import NamedConfig
        from lattice.state import config_bucket

        try:
            kv = await self.nc.jetstream().key_value(config_bucket(self.lattice))
            keys = await bucket_keys(self.nc, config_bucket(self.lattice))
        except Exception:  # no bucket yet (no host ever started)
            return {}
        found: dict[str, dict[str, str]] = {}
        for key in sorted(keys):
            with contextlib.suppress(Exception):
                entry = await kv.get(key)
                if entry.value:
                    found[key] = NamedConfig.model_validate_json(entry.value).redacted()
        return found

    # -- the controller -------------------------------------------------------

    async def model(
        self, verb: str, name: str | None = None, body: bytes | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A `wadm.api.{lattice}.model.{verb}[.{name}]` request; LatticeError on failure."""
        subject = f"wadm.api.{self.lattice}.model.{verb}" + (f".{name}" if name else "")
        data = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        # No responders means no controller received the request, so sending it again
        # is safe. A controller that is restarting, or a standby taking over, leaves
        # the API's queue group empty for a moment: ask again within a short grace
        # before telling the user none runs.
        grace = asyncio.get_running_loop().time() + min(self.timeout, NO_CONTROLLER_GRACE)
        while True:
            try:
                msg = await self.nc.request(subject, data, timeout=self.timeout)
                break
            except NoRespondersError:
                if asyncio.get_running_loop().time() < grace:
                    await asyncio.sleep(0.1)
                    continue
                raise LatticeError(
                    f"no controller runs on lattice {self.lattice!r}; start one with "
                    "`lattice controller` or `lattice up --controller`"
                ) from None
            except NatsTimeout:
                raise LatticeError(
                    f"the controller did not answer within {self.timeout:g}s"
                ) from None
        reply = json.loads(msg.data)
        if reply.get("result") == "error":
            raise LatticeError(reply.get("message", "controller error"))
        return dict(reply)

    # -- events -----------------------------------------------------------------

    async def events(
        self,
        *,
        event_type: str | None = None,
        since: datetime | None = None,
        follow: bool = True,
        idle: float = 1.0,
    ) -> AsyncIterator[dict[str, Any]]:
        """Lattice events as CloudEvent dicts, oldest first.

        With `since`, the recent ones are replayed from the lattice's bounded event
        stream (hosts create it: host/events_stream.py), then, when `follow`, new ones
        as they come. Without the stream (no host started it yet) only live events
        come. Without `follow` it ends once the replay is done (or `idle` seconds pass
        with nothing new)."""
        subject = subjects.event(self.lattice, event_type or ">")
        if event_type is None:
            subject = subjects.events_wildcard(self.lattice)
        if since is not None:
            try:
                sub = await self.nc.jetstream().subscribe(
                    subject,
                    ordered_consumer=True,
                    deliver_policy=nats.js.api.DeliverPolicy.BY_START_TIME,
                    config=nats.js.api.ConsumerConfig(
                        opt_start_time=since.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    ),
                )
            except Exception:  # no stream covers the subject
                sub = None
            if sub is not None:
                try:
                    while True:
                        try:
                            msg = await sub.next_msg(timeout=idle if not follow else 3600)
                        except nats.errors.TimeoutError:
                            if not follow:
                                return
                            continue
                        with contextlib.suppress(ValueError):
                            yield json.loads(msg.data)
                        if not follow and msg.metadata.num_pending == 0:
                            return
                finally:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                return
        if not follow:
            return
        live = await self.nc.subscribe(subject)
        try:
            async for msg in live.messages:
                with contextlib.suppress(ValueError):
                    yield json.loads(msg.data)
        finally:
            with contextlib.suppress(Exception):
                await live.unsubscribe()

    async def spy(
        self, component_id: str, ready: Callable[[], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every call in and out of `component_id` as a SpyRecord dict, until the caller
        stops iterating. The hosts running it tap calls only while this lease is
        renewed (lattice/protocol/spy.py); `ready` is called once the first lease has
        reached the server, so calls made after it are seen."""
        from lattice.protocol import spy

        subjects.check_token(component_id, "component id")
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        watch = spy.SpyWatch(inbox=inbox).model_dump_json().encode()

        async def renew() -> None:
            while True:
                await asyncio.sleep(spy.RENEW_S)
                await self.nc.publish(spy.watch_subject(self.lattice, component_id), watch)

        await self.nc.publish(spy.watch_subject(self.lattice, component_id), watch)
        await self.nc.flush()
        if ready is not None:
            ready()
        renewing = asyncio.create_task(renew())
        try:
            async for msg in sub.messages:
                with contextlib.suppress(ValueError):
                    yield json.loads(msg.data)
        finally:
            renewing.cancel()
            with contextlib.suppress(Exception):
                await self.nc.publish(spy.unwatch_subject(self.lattice, component_id), watch)
                await self.nc.flush(timeout=1)
                await sub.unsubscribe()

    # -- invocations ----------------------------------------------------------

    async def call(
        self,
        component_id: str,
        function: str,
        args: list[Any] | dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Invoke an exported function; raises InvocationError for a failure at the callee."""
        value, _host = await self._call(component_id, function, args, timeout, None)
        return value

    async def call_traced(
        self,
        component_id: str,
        function: str,
        args: list[Any] | dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        traceparent: str | None = None,
    ) -> tuple[Any, str | None]:
        """Like `call`, also returning the id of the host that served it; the call
        carries `traceparent` (default: a fresh one), so its spans are one trace."""
        headers = {
            SOURCE_HEADER: "lattice-cli",
            TRACEPARENT_HEADER: traceparent or new_traceparent(),
        }
        return await self._call(component_id, function, args, timeout, headers)

    async def _call(
        self,
        component_id: str,
        function: str,
        args: list[Any] | dict[str, Any] | None,
        timeout: float | None,
        headers: dict[str, str] | None,
    ) -> tuple[Any, str | None]:
        subjects.check_token(component_id, "component id")
        subject = f"{self.lattice}.{component_id}.rpc.{function}"
        try:
            msg = await self.nc.request(
                subject,
                codec.pack(args if args is not None else []),
                timeout=timeout or self.timeout,
                headers=headers,
            )
        except NoRespondersError:
            raise LatticeError(
                f"no host runs component {component_id!r} on lattice {self.lattice!r}"
            ) from None
        except NatsTimeout:
            raise LatticeError(
                f"{component_id}.{function}: no reply within {timeout or self.timeout:g}s"
            ) from None
        body = codec.unpack(msg.data)
        headers = msg.headers or {}
        kind = headers.get(ERROR_HEADER)
        if kind is not None:
            raise InvocationError.from_body(body, kind)
        return body, headers.get(HOST_HEADER)
