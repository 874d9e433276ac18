"""The provider's same-host socket: link calls from its own host, without NATS.

The runner starts one when the host data names a `local_socket`
(lattice/protocol/local_rpc.py has the frames). Every frame is served by the same
`serve(operation, headers, data)` the NATS subscription uses, so a call answers the same
whichever way it came. The socket file is made readable and writable by this user only
(the host's private directory already keeps others out); what reaches it is the host's.

A frame that cannot be read closes its connection (the caller's call fails at once,
naming the broken connection) and is logged; the provider keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lattice.protocol.invocation import ErrorKind, InvocationError
from lattice.protocol.local_rpc import (
    STOPPING_HEADER,
    FrameError,
    Reply,
    Request,
    decode_request,
    encode_reply,
    frame_length,
)
from providers.sdk.dispatch import error_reply

Serve = Callable[[str, dict[str, str], bytes], Awaitable[tuple[dict[str, str] | None, bytes]]]


class LocalServer:
    def __init__(
        self,
        path: Path,
        serve: Serve,
        track: Callable[[asyncio.Task[None]], None],
        log: Any,
        host_id: str,
    ) -> None:
        self.path = path
        self._serve = serve
        self._track = track  # the runner waits for tracked calls when it stops
        self._log = log
        self._host_id = host_id
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = False

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous process's, which cannot be serving it now
        self._server = await asyncio.start_unix_server(self._connection, path=str(self.path))
        os.chmod(self.path, 0o600)

    def stop_taking(self) -> None:
        """No new connections; frames that still arrive are answered `stopping` (not run),
        so their callers send them over NATS instead of waiting."""
        self._stopping = True
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        self.stop_taking()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    body = await reader.readexactly(frame_length(await reader.readexactly(4)))
                    req = decode_request(body)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return  # the host closed it (a thread ended, a host stopped)
                except FrameError as exc:
                    self._log.warning(
                        "bad frame on the local socket; connection closed", error=str(exc)
                    )
                    return
                if self._stopping:
                    stopping = Reply(req.call_id, {STOPPING_HEADER: "stopping"}, b"")
                    writer.write(encode_reply(stopping))
                    continue
                self._track(asyncio.create_task(self._one(req, writer)))
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(self, req: Request, writer: asyncio.StreamWriter) -> None:
        headers, body = await self._serve(req.operation, req.headers, req.data)
        try:
            frame = encode_reply(Reply(req.call_id, headers, body))
        except FrameError as exc:
            err = InvocationError(ErrorKind.INTERNAL, f"{req.operation}: {exc}")
            frame = encode_reply(Reply(req.call_id, *error_reply(self._host_id, err)))
        if not writer.is_closing():
            writer.write(frame)
