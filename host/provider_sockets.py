"""Link calls to this host's own provider processes, over their Unix sockets.

A provider process keeps its isolation (its own process, its own NATS login); what it
saves is the route. Over NATS a call from a wasm thread crossed to the host's event loop,
went through the NATS server to the provider and back the same way: two loopback hops
and two thread hand-offs. Here the wasm thread writes one frame to the provider's socket
and blocks (without the GIL) on the reply, on a connection of its own, so calls from
different threads never queue behind each other on the host's side.

The frames are lattice/protocol/local_rpc.py's. Which providers have a socket is not
tracked: a provider this host started listens at `socket_path(directory, id)`, and a
connection either succeeds or says, at once, that the provider is not here (then the
call goes over NATS, and the socket is not tried again for `RETRY_ABSENT_S`). Hand-written
because no library does blocking, per-thread, multiplexed-free request/reply over a Unix
socket for less than the code it would take to adapt it.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from pathlib import Path

from lattice.protocol.local_rpc import (
    STOPPING_HEADER,
    FrameError,
    Reply,
    Request,
    decode_reply,
    encode_request,
    frame_length,
    socket_path,
)

RECV_CHUNK = 64 * 1024
"""What the first read of a reply asks for: a small reply arrives whole in one."""
CONNECT_TIMEOUT_S = 1.0
"""A provider whose listen queue is full does not take a connection for this long."""
RETRY_ABSENT_S = 1.0
"""After a provider's socket was missing or refused, NATS only for this long."""


class LocalCallLost(Exception):
    """The connection ended after the call was sent: the outcome is unknown."""


class ProviderSockets:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._local = threading.local()
        self._absent: dict[str, float] = {}  # provider id -> monotonic time to try again
        self._ids = itertools.count(1)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.calls = 0
        """Calls answered through a socket (an approximate count, for tests and logs)."""

    def path(self, provider_id: str) -> Path:
        return socket_path(self.directory, provider_id)

    def reachable(self, provider_id: str) -> bool:
        """Whether this thread has (or can make now) a connection to `provider_id`: a
        provider this host does not run answers False at once, every time for a while."""
        return self._connection(provider_id) is not None

    def call(
        self, provider_id: str, operation: str, headers: dict[str, str], data: bytes, timeout: float
    ) -> Reply | None:
        """The provider's reply, or None when the call was not delivered (no socket for
        `provider_id` here, or the provider is stopping): send it over NATS.

        Raises TimeoutError (no reply within `timeout`) or LocalCallLost (the connection
        closed before the reply) once the frame was sent: nothing is ever sent twice."""
        req = Request(next(self._ids), operation, headers, data)
        frame = encode_request(req)
        sock = self._deliver(provider_id, frame, timeout)
        if sock is None:
            return None
        try:
            reply = _receive(sock, time.monotonic() + timeout)
        except BaseException:
            self._drop(provider_id)  # a late reply must not answer the next call
            raise
        if reply.call_id != req.call_id:
            self._drop(provider_id)
            raise LocalCallLost(f"reply for call {reply.call_id} to call {req.call_id}")
        if reply.headers is not None and STOPPING_HEADER in reply.headers:
            self._drop(provider_id)
            self._absent[provider_id] = time.monotonic() + RETRY_ABSENT_S
            return None
        self.calls += 1
        return reply

    def _deliver(self, provider_id: str, frame: bytes, timeout: float) -> socket.socket | None:
        """The connection `frame` was written to; None when it could not be written.
        A connection the provider closed (it restarted) fails the write, never a read,
        and is replaced once."""
        for _ in range(2):
            sock = self._connection(provider_id)
            if sock is None:
                return None
            try:
                _set_timeout(sock, socket.SO_SNDTIMEO, timeout)
                sock.sendall(frame)
            except OSError:  # also its send timeout: the frame is incomplete, never read
                self._drop(provider_id)
                continue
            return sock
        return None

    def _connection(self, provider_id: str) -> socket.socket | None:
        conns: dict[str, socket.socket] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        sock = conns.get(provider_id)
        if sock is not None:
            return sock
        until = self._absent.get(provider_id)
        if until is not None and time.monotonic() < until:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _set_timeout(sock, socket.SO_SNDTIMEO, CONNECT_TIMEOUT_S)  # bounds a Unix connect
            sock.connect(str(self.path(provider_id)))
        except OSError:  # not started here, or gone: its file is missing or refuses
            sock.close()
            self._absent[provider_id] = time.monotonic() + RETRY_ABSENT_S
            return None
        self._absent.pop(provider_id, None)
        conns[provider_id] = sock
        with self._lock:
            self._open.add(sock)
        return sock

    def _drop(self, provider_id: str) -> None:
        conns: dict[str, socket.socket] = getattr(self._local, "conns", {})
        sock = conns.pop(provider_id, None)
        if sock is not None:
            with self._lock:
                self._open.discard(sock)
            sock.close()

    def close(self) -> None:
        """Close every thread's connections (the host stops)."""
        with self._lock:
            socks, self._open = self._open, set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _receive(sock: socket.socket, deadline: float) -> Reply:
    """One reply frame, most often in one `recv`: the provider answers one call at a
    time per connection, so nothing after the frame can be there."""
    try:
        data = _recv(sock, RECV_CHUNK, deadline)
        while len(data) < 4:
            data += _recv(sock, 4 - len(data), deadline)
        end = 4 + frame_length(bytes(data[:4]))
        while len(data) < end:
            data += _recv(sock, end - len(data), deadline)
        if len(data) > end:
            raise FrameError(f"{len(data) - end} bytes after the reply")
        return decode_reply(bytes(data[4:]))
    except FrameError as exc:
        raise LocalCallLost(f"unreadable reply: {exc}") from None


def _recv(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Up to `n` bytes by the deadline, from a socket in blocking mode with a kernel
    receive timeout (`SO_RCVTIMEO`).

    Why not `settimeout`: a Python socket with a timeout polls before every recv and
    send, and each of those syscalls hands the GIL over and takes it back. With a wasm
    thread per seat blocked on its provider, those hand-overs were most of a call's host
    CPU (`bench provider`, README): two per call instead of six."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    _set_timeout(sock, socket.SO_RCVTIMEO, left)
    try:
        chunk = sock.recv(n)
    except BlockingIOError:  # the receive timeout ran out
        raise TimeoutError from None
    except ConnectionError:  # reset: it died with our frame unread
        chunk = b""
    except OSError as exc:
        raise LocalCallLost(f"connection failed: {exc.strerror or exc}") from None
    if not chunk:
        raise LocalCallLost("the provider closed the connection before it answered")
    return chunk


def _set_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """A kernel send or receive timeout (a `struct timeval`; never 0, which is none)."""
    whole = int(seconds)
    micros = max(int((seconds - whole) * 1_000_000), 0 if whole else 1)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, micros))
