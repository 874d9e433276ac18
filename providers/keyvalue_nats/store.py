"""A JetStream key-value bucket as a wasi:keyvalue store, on the JetStream API directly.

Layout: in JetStream bucket `J` (stream `KV_J`, subjects `$KV.J.>`), wasi bucket `b` and
key `k` -> subject `$KV.J.b.{escape(k)}`. `escape` keeps `[A-Za-z0-9_-]` and writes
other bytes as `=XX`, which is always a valid single NATS KV token. An escaped key
longer than 1024 characters (a long non-ASCII key can triple) would overflow the
server's 4 KiB protocol line and get the connection closed, so such keys are stored as
`=H{sha256 hex}` (`escape` never makes "=H") with the original key in the message
header `Lattice-Key` (base64); list-keys reads it back from a headers-only consumer.

Reads use the stream's last message per subject (a `KV-Operation: DEL/PURGE` marker
means missing); writes publish to the subject; delete publishes a DEL marker (the
bucket keeps one message per subject); increment publishes with
`Nats-Expected-Last-Subject-Sequence` and retries only on a wrong-sequence error.

Accounting: a wrong-sequence error is JetStream refusing the write, so nothing was
stored and another round is safe; nothing else is repeated. Not connected before
sending, "no responders" (no stream listens), a full outbound buffer and JetStream's
own error answers are `Unavailable` / `other`: nothing was stored. A write published
with no acknowledgement (timeout, connection lost or reconnecting meanwhile: nats-py
may still deliver a buffered message after it reconnects) is `Indeterminate`. A read
in those cases is `Unavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Iterator

import nats.errors as nx
import nats.js.errors as jx
from nats.aio.client import Client as NATS
from nats.js import api

from providers.keyvalue.keycodec import escape, unescape
from providers.keyvalue.semantics import Indeterminate, KvError, Unavailable
from providers.keyvalue.store import MAX_CAS_RETRIES, Store, Update, backoff, contention

JS_TIMEOUT = 2.0
MAX_TOKEN = 1024
KEY_HEADER = "Lattice-Key"
KV_OP = "KV-Operation"
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = (10071, 10164)
STREAM_NOT_FOUND = 10059
LIST_BATCH = 1000


@contextlib.contextmanager
def _errors(where: str, *, write: bool = False) -> Iterator[None]:
    lost = Indeterminate if write else Unavailable
    try:
        yield
    except (nx.TimeoutError, TimeoutError):
        raise lost("nats", f"no answer from JetStream at {where}") from None
    except (nx.NoRespondersError, jx.NoStreamResponseError):
        raise Unavailable("nats", f"JetStream is not available at {where}") from None
    except jx.ServiceUnavailableError as exc:
        raise Unavailable("nats", f"JetStream at {where}: {exc.description}") from None
    except (nx.ConnectionDrainingError, nx.OutboundBufferLimitError) as exc:  # not sent
        raise Unavailable("nats", f"not connected to {where} ({type(exc).__name__})") from None
    except (
        nx.ConnectionClosedError,
        nx.ConnectionReconnectingError,
        nx.StaleConnectionError,
    ) as exc:
        raise lost("nats", f"connection to {where} lost ({type(exc).__name__})") from None
    except jx.APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            raise  # increment's conflict signal
        raise KvError.other(f"nats error: {exc.description or exc}") from None


def token(key: str) -> tuple[str, dict[str, str] | None]:
    """The subject token for `key`, and the header carrying the key when it is hashed."""
    tok = escape(key)
    if len(tok) <= MAX_TOKEN:
        return tok, None
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"=H{digest}", {KEY_HEADER: base64.b64encode(key.encode("utf-8")).decode("ascii")}


class NatsStore(Store):
    backend = "nats"

    def __init__(self, nc: NATS, bucket: str, url: str) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=JS_TIMEOUT)
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._url = url
        self._ready = False
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"nats {self._url} bucket {self._bucket}"

    def _subject(self, bucket: str, tok: str) -> str:
        return f"$KV.{self._bucket}.{bucket}.{tok}"

    async def _ensure(self) -> None:
        """Fail fast when disconnected; create the JetStream bucket on first use."""
        if not self._nc.is_connected:
            raise Unavailable("nats", f"not connected to {self._url}")
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return
            with _errors(self._url):
                try:
                    await self._js.stream_info(self._stream)
                except jx.NotFoundError:
                    with contextlib.suppress(jx.BadRequestError):  # created meanwhile
                        await self._js.create_key_value(
                            api.KeyValueConfig(bucket=self._bucket, history=1)
                        )
            self._ready = True

    async def _last(self, subject: str) -> tuple[int, bytes | None]:
        """(sequence of the subject's last message or 0, value or None if missing)."""
        await self._ensure()
        with _errors(self._url):
            try:
                msg = await self._js.get_msg(self._stream, subject=subject)
            except jx.NotFoundError as exc:
                if exc.err_code == STREAM_NOT_FOUND:
                    self._ready = False
                    raise Unavailable("nats", f"bucket {self._bucket} vanished") from None
                return 0, None
        if msg.headers and msg.headers.get(KV_OP) in ("DEL", "PURGE"):
            return msg.seq or 0, None
        return msg.seq or 0, msg.data or b""

    async def _publish(
        self, subject: str, value: bytes, headers: dict[str, str] | None
    ) -> api.PubAck:
        await self._ensure()
        with _errors(self._url, write=True):
            return await self._js.publish(subject, value, headers=headers or None)

    async def get(self, bucket: str, key: str) -> bytes | None:
        tok, _ = token(key)
        _, value = await self._last(self._subject(bucket, tok))
        return value

    async def set(self, bucket: str, key: str, value: bytes) -> None:
        tok, hdr = token(key)
        await self._publish(self._subject(bucket, tok), value, hdr)

    async def delete(self, bucket: str, key: str) -> None:
        tok, _ = token(key)
        await self._publish(self._subject(bucket, tok), b"", {KV_OP: "DEL"})

    async def update(self, bucket: str, key: str, fn: Update) -> bytes:
        tok, hdr = token(key)
        subject = self._subject(bucket, tok)
        for attempt in range(MAX_CAS_RETRIES):
            seq, current = await self._last(subject)
            new = fn(current)
            try:
                await self._publish(subject, new, {**(hdr or {}), EXPECTED_LAST: str(seq)})
                return new
            except jx.APIError:  # only a wrong last sequence gets here (see _errors):
                await backoff(attempt)  # refused, nothing stored, so another round is safe
        raise contention(key)

    async def keys(self, bucket: str) -> list[str]:
        """Last message per subject under `$KV.J.b.>`, headers only, deletes skipped."""
        await self._ensure()
        prefix = self._subject(bucket, "")
        out: list[str] = []
        with _errors(self._url):
            sub = await self._js.pull_subscribe(
                f"{prefix}>",
                stream=self._stream,
                config=api.ConsumerConfig(
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=api.AckPolicy.NONE,
                    headers_only=True,
                    inactive_threshold=30.0,
                    mem_storage=True,
                ),
            )
            try:
                pending = (await sub.consumer_info()).num_pending
                while pending > 0:
                    try:
                        msgs = await sub.fetch(min(pending, LIST_BATCH), timeout=JS_TIMEOUT)
                    except jx.FetchTimeoutError:  # keys deleted while listing
                        break
                    for msg in msgs:
                        key = self._key(msg.subject[len(prefix) :], msg.headers or {})
                        if key is not None:
                            out.append(key)
                    pending = msgs[-1].metadata.num_pending if msgs else 0
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        return out

    @staticmethod
    def _key(tok: str, headers: dict[str, str]) -> str | None:
        if headers.get(KV_OP) in ("DEL", "PURGE"):
            return None
        try:
            if tok.startswith("=H"):
                return base64.b64decode(headers[KEY_HEADER], validate=True).decode("utf-8")
            return unescape(tok)
        except (KeyError, ValueError):  # not written by us
            return None

    async def ping(self) -> None:
        await self._ensure()
        with _errors(self._url):
            await self._js.stream_info(self._stream)
