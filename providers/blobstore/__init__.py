"""wasi:blobstore@0.2.0-draft semantics shared by the built-in blobstore providers.

`semantics` (names, ranges, pages, wire errors), `backend` (the contract a store
implements) and `provider` (`BlobstoreProvider`, which serves the operations for any
`Backend`, chunked reads and multi-part uploads included). See docs/blobstore.md.
"""

from providers.blobstore.backend import Backend, ObjectMeta, Writer
from providers.blobstore.provider import BlobstoreProvider
from providers.blobstore.semantics import CHUNK, BlobError, Indeterminate, Unavailable

__all__ = [
    "CHUNK",
    "Backend",
    "BlobError",
    "BlobstoreProvider",
    "Indeterminate",
    "ObjectMeta",
    "Unavailable",
    "Writer",
]
