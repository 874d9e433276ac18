"""Baseline for `bench provider`: a plain NATS handler that does INCR with redis-py."""

from __future__ import annotations

import asyncio
import sys

import msgpack
import nats
import redis.asyncio as redis


async def serve(url: str, redis_url: str, subject: str) -> None:
    nc = await nats.connect(url)
    r = redis.from_url(redis_url)

    async def incr(msg: nats.aio.msg.Msg) -> None:
        (key,) = msgpack.unpackb(msg.data)
        await msg.respond(msgpack.packb({"ok": await r.incr(key)}))

    sub = await nc.subscribe(subject, queue="raw")

    async def loop() -> None:
        async for msg in sub.messages:  # a task per message, as a real service would
            asyncio.create_task(incr(msg))  # noqa: RUF006

    task = asyncio.create_task(loop())
    await nc.flush()
    print("ready", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3]))
