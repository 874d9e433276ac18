"""`wasi:filesystem` stubs: no preopened directories, every operation refused.

`get-directories` returns no preopens, so a guest never obtains a descriptor; every
function that returns `result<_, error-code>` answers `err(unsupported)` anyway, and
`filesystem-error-code` says no error is a filesystem error. Functions that cannot fail
by type trap (they need a descriptor, which cannot exist).
"""

from __future__ import annotations

from host.wasi._stubs import refuse_with
from host.wasi.binding import HostResource, Interface, resource
from host.wasi.io import IoError
from host.wasi.state import WasiState

ERROR_CODE = "unsupported"


@resource("wasi:filesystem/types", "descriptor")
class Descriptor(HostResource):
    """Never handed out."""


@resource("wasi:filesystem/types", "directory-entry-stream")
class DirectoryEntryStream(HostResource):
    """Never handed out."""


def _filesystem_error_code(state: WasiState, err: IoError) -> str | None:
    return None


def _get_directories(state: WasiState) -> list[tuple[Descriptor, str]]:
    return []


INTERFACES = (
    Interface(
        "wasi:filesystem/types",
        resources=(Descriptor, DirectoryEntryStream),
        functions={"filesystem-error-code": _filesystem_error_code},
        fallback=refuse_with(ERROR_CODE),
    ),
    Interface("wasi:filesystem/preopens", functions={"get-directories": _get_directories}),
)
