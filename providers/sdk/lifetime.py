"""Tie a provider's life to its host's: stdin EOF, the parent-death signal, a pid check.

A host starts each provider in a session of its own (so a Ctrl-C on the host's terminal
does not reach it) with stdin a pipe: it writes the host data line and keeps the pipe
open for as long as it runs. The write end belongs to the host process alone (pipes are
close-on-exec), so the kernel closes it when the host dies, however it dies, SIGKILL
included, and the provider reads EOF. That works on every platform.

On Linux the provider also asks for `PR_SET_PDEATHSIG = SIGTERM`: the kernel sends it
SIGTERM when its parent goes. The request only covers a parent that is still alive when
it is made, so `HostWatch` then checks that its parent is still the host that started it
(the host puts its pid in the host data): a host that died between fork and prctl
leaves the provider adopted by another process, and it stops at once.

Once the host is gone, the provider's stdout and stderr pipes have no reader; writing a
log line would raise BrokenPipeError in the middle of the graceful stop. `silence_if_orphaned`
points them at /dev/null first.

This module never reads more of stdin than it needs to see EOF, never writes to it, and
never decides how to stop: it calls the `on_gone` callback it is given (the runner's).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import select
import signal
import stat
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `sig` when the parent dies; False where that is not possible.

    Note the kernel's meaning of "parent": the thread that forked us. A host forks its
    providers from its event-loop thread, which lives as long as the host does.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def alive(pid: int) -> bool:
    """Whether a process `pid` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    return True


def host_gone_reason(host_pid: int | None) -> str | None:
    """Why the host that started us is gone, or None while it (maybe) runs.

    Started by a host that named its pid: our parent must be that pid; if it is not
    (a wrapper script in between), the host must at least still exist. Started by
    hand (no pid): nothing to compare, stdin EOF alone decides.
    """
    if host_pid is None or host_pid <= 0:
        return None
    if os.getppid() == host_pid or alive(host_pid):
        return None
    return f"host process {host_pid} is gone (parent is now {os.getppid()})"


def _watchable(fd: int) -> bool:
    """Only a pipe or socket says "host gone" with EOF; a file, a tty or /dev/null do
    not (a provider started by hand from a file or a terminal keeps running)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _broken(fd: int) -> bool:
    """A pipe whose reader is gone polls as POLLERR (Linux, BSD); else False."""
    if not hasattr(select, "poll"):
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def silence_if_orphaned() -> bool:
    """Point stdout/stderr at /dev/null when nobody reads them any more (host dead), so
    a log line cannot break the graceful stop; True if anything was redirected."""
    moved = False
    for fd in (1, 2):
        if _broken(fd):
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)
                moved = True
    return moved


class HostWatch:
    """Calls `on_gone(reason)` once when the host is gone: stdin EOF, or a parent that
    is no longer the host. Start it inside the running loop; `close()` stops watching."""

    def __init__(
        self, on_gone: Callable[[str], None], host_pid: int | None, stdin_fd: int = 0
    ) -> None:
        self._on_gone = on_gone
        self._host_pid = host_pid
        self._fd = stdin_fd
        self._reading = False
        self._fired = False
        self._poll: asyncio.Task[None] | None = None

    def start(self, poll_interval: float = 1.0) -> None:
        loop = asyncio.get_running_loop()
        reason = host_gone_reason(self._host_pid)
        if reason is not None:  # died before we could ask for the death signal
            loop.call_soon(self._gone, reason)
            return
        if _watchable(self._fd):
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                loop.add_reader(self._fd, self._readable)
                self._reading = True
        if self._host_pid:
            # Belt and braces where stdin is not a pipe and prctl is missing (not Linux).
            self._poll = loop.create_task(self._poll_parent(poll_interval))

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(f"stdin failed ({exc.strerror or exc})")
            return
        if not data:
            self._gone("stdin closed (host gone or stopping us)")
        # anything else on stdin after the host data line is ignored

    async def _poll_parent(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            reason = host_gone_reason(self._host_pid)
            if reason is not None:
                self._gone(reason)
                return

    def _gone(self, reason: str) -> None:
        self._stop_reading()
        if not self._fired:
            self._fired = True
            self._on_gone(reason)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)

    def close(self) -> None:
        self._stop_reading()
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
