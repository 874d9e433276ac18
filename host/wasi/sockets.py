"""`wasi:sockets` stubs: a network handle exists, but every socket or lookup is refused.

`instance-network` hands out a `Network` (it cannot be used for anything);
`create-tcp-socket`, `create-udp-socket` and `resolve-addresses` — like every other
function returning `result<_, error-code>` — answer `err(access-denied)`, which is
what a WASI host without network permissions says. Functions that cannot fail by type
need a socket, which cannot exist, and trap.
"""

from __future__ import annotations

from host.wasi._stubs import refuse_with
from host.wasi.binding import HostResource, Interface, resource
from host.wasi.state import WasiState

ERROR_CODE = "access-denied"


@resource("wasi:sockets/network", "network")
class Network(HostResource):
    """The (powerless) network of this instance."""


@resource("wasi:sockets/tcp", "tcp-socket")
class TcpSocket(HostResource):
    """Never handed out."""


@resource("wasi:sockets/udp", "udp-socket")
class UdpSocket(HostResource):
    """Never handed out."""


@resource("wasi:sockets/udp", "incoming-datagram-stream")
class IncomingDatagramStream(HostResource):
    """Never handed out."""


@resource("wasi:sockets/udp", "outgoing-datagram-stream")
class OutgoingDatagramStream(HostResource):
    """Never handed out."""


@resource("wasi:sockets/ip-name-lookup", "resolve-address-stream")
class ResolveAddressStream(HostResource):
    """Never handed out."""


def _instance_network(state: WasiState) -> Network:
    return Network()


_REFUSE = refuse_with(ERROR_CODE)

INTERFACES = (
    Interface("wasi:sockets/network", resources=(Network,), fallback=_REFUSE),
    Interface("wasi:sockets/instance-network", functions={"instance-network": _instance_network}),
    Interface("wasi:sockets/tcp", resources=(TcpSocket,), fallback=_REFUSE),
    Interface("wasi:sockets/tcp-create-socket", fallback=_REFUSE),
    Interface(
        "wasi:sockets/udp",
        resources=(UdpSocket, IncomingDatagramStream, OutgoingDatagramStream),
        fallback=_REFUSE,
    ),
    Interface("wasi:sockets/udp-create-socket", fallback=_REFUSE),
    Interface("wasi:sockets/ip-name-lookup", resources=(ResolveAddressStream,), fallback=_REFUSE),
)
