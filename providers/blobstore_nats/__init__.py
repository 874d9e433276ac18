"""blobstore-nats: wasi:blobstore on NATS JetStream object stores.

Run with `python -m providers.blobstore_nats`. Link target config: `bucket_prefix`
(default `blob-`), optional `page_size` and `upload_timeout`. Container `c` is the
object store bucket `{bucket_prefix}c` on the lattice's NATS; see `store.py`.
"""

from providers.blobstore_nats.provider import NatsBlobstoreProvider

__all__ = ["NatsBlobstoreProvider"]
