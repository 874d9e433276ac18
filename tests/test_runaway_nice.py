"""A worker whose call was stopped by a limit yields the CPU to its neighbours' workers.

Linux keeps a nice value per thread (`/proc/self/task/TID/stat`, field 19): after the
runaway's `spin` is stopped by its deadline, the worker that ran it is at
`RUNAWAY_NICE`, and no other thread of the host is (the event loop, the epoch ticker,
the neighbour's workers). `python -m bench neighbour` measures what it buys.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from host.runtime.pool import RUNAWAY_NICE
from lattice.client import LatticeClient
from lattice.protocol.invocation import ErrorKind, InvocationError

ECHO = "lattice:examples/echo.echo"


def niced_threads() -> list[int]:
    """Ids of this process's threads whose nice is RUNAWAY_NICE."""
    out = []
    for task in Path("/proc/self/task").iterdir():
        with open(task / "stat") as f:
            # after the command name in parentheses: state is field 3, nice field 19
            fields = f.read().rsplit(")", 1)[1].split()
        if int(fields[16]) == RUNAWAY_NICE:
            out.append(int(task.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux per-thread nice")
async def test_a_stopped_runaways_worker_is_niced_and_only_it(
    host, client: LatticeClient, runaway_ref: str, echo_ref: str
) -> None:
    await client.scale_component(host.host_id, runaway_ref, "r", 1, limits={"timeout_ms": 300})
    await client.scale_component(host.host_id, echo_ref, "echo", 2)
    assert await client.call("r", "ping", []) == "pong"
    assert await client.call("echo", ECHO, ["x"]) == "x"
    assert niced_threads() == []
    with pytest.raises(InvocationError) as stopped:
        await client.call("r", "spin", [], timeout=20)
    assert stopped.value.kind is ErrorKind.TIMEOUT
    assert len(niced_threads()) == 1
    assert threading.get_native_id() not in niced_threads()  # the event loop's thread
    for _ in range(20):  # the neighbour's workers stay as they were
        assert await client.call("echo", ECHO, ["y"]) == "y"
    assert await client.call("r", "ping", []) == "pong"  # the demoted worker still serves
    assert len(niced_threads()) == 1
    assert os.getpriority(os.PRIO_PROCESS, 0) == 0
