"""The blobstore-nats provider: JetStream object stores on the lattice NATS.

nats-py's object store `put` reads its data from a blocking reader in the loop's
default executor; each upload in progress parks one worker thread there (waiting for
its next part), so the default executor is sized for `MAX_UPLOADS` at start-up.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from providers.blobstore import Backend, BlobstoreProvider
from providers.blobstore import semantics as bs
from providers.blobstore.provider import MAX_UPLOADS
from providers.blobstore_nats.store import NatsBackend
from providers.sdk import Link


class NatsBlobstoreProvider(BlobstoreProvider):
    backend = "nats"

    async def on_start(self) -> None:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=MAX_UPLOADS + 8, thread_name_prefix="blob-put")
        )

    async def open_backend(self, link: Link) -> Backend:
        prefix = bs.prefix(
            self.setting(link, "bucket_prefix"), "link target config 'bucket_prefix'", "blob-"
        )
        return NatsBackend(self.nats, prefix)
