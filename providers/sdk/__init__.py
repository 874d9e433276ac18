"""The provider SDK: write a capability provider as one class, run it with `run`.

    from providers.sdk import InvocationError, ErrorKind, Link, Provider, operation, run

    class Upper(Provider):
        @operation("example:text/convert.upper", params=("text",))
        async def upper(self, link: Link, args: list) -> str:
            return str(args[0]).upper()

    if __name__ == "__main__":
        run(Upper)

Modules, one concern each: `hostdata` (the start-up line, links, secrets), `provider`
(the base class: hooks, operations, link table), `dispatch` (one call, every failure
typed), `runner` (NATS, control subjects, signals, graceful stop). From Lattice it
imports only `lattice.protocol`, `lattice.codec`, `lattice.logs`, `lattice.tracing` and
`lattice.natsauth`. See docs/providers.md.
"""

from lattice.protocol.invocation import ErrorKind, InvocationError
from providers.sdk.dispatch import invoke
from providers.sdk.hostdata import (
    HostData,
    HostDataError,
    Link,
    LinkKey,
    NatsCredentials,
    parse_host_data,
    read_host_data,
)
from providers.sdk.provider import Handler, LinkError, Operation, Provider, operation
from providers.sdk.runner import Runner, run, run_async

__all__ = [
    "ErrorKind",
    "Handler",
    "HostData",
    "HostDataError",
    "InvocationError",
    "Link",
    "LinkError",
    "LinkKey",
    "NatsCredentials",
    "Operation",
    "Provider",
    "Runner",
    "invoke",
    "operation",
    "parse_host_data",
    "read_host_data",
    "run",
    "run_async",
]
