"""A plain nats-py echo responder: the baseline the lattice is measured against."""

from __future__ import annotations

import asyncio
import sys

import nats


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url)

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, queue="raw", cb=echo)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
