"""The blobstore-s3 provider: one S3 client per link, credentials from target secrets.

The access key id and secret are read from the link's target secrets only (never from
config, which is logged by name and may be shown), and go nowhere but the client: not
into `where`, log lines or error messages.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from providers.blobstore import Backend, BlobstoreProvider
from providers.blobstore import semantics as bs
from providers.blobstore_s3.store import S3Backend, S3Settings
from providers.sdk import Link

REGION_RE = re.compile(r"^[a-z0-9-]{1,32}$")


def shown(endpoint: str) -> str:
    """`scheme://host:port` of the endpoint, never a user or password in it."""
    parts = urlsplit(endpoint)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class S3BlobstoreProvider(BlobstoreProvider):
    backend = "s3"

    async def open_backend(self, link: Link) -> Backend:
        endpoint = self.required(
            link, "endpoint", "the S3 URL, e.g. https://s3.eu-west-1.amazonaws.com"
        )
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("link target config 'endpoint' must be an http(s):// URL")
        if parts.username or parts.password:
            raise ValueError(
                "link target config 'endpoint' must not carry credentials; "
                "use the target secrets access_key_id and secret_access_key"
            )
        region = self.setting(link, "region", "us-east-1") or "us-east-1"
        if not REGION_RE.match(region):
            raise ValueError("link target config 'region' must be a region name like eu-west-1")
        prefix = bs.prefix(
            self.setting(link, "bucket_prefix"), "link target config 'bucket_prefix'", "blob-"
        )
        key_id, secret = link.secret("access_key_id"), link.secret("secret_access_key")
        if (key_id is None) != (secret is None):
            missing = "access_key_id" if key_id is None else "secret_access_key"
            raise ValueError(f"link target secret {missing!r} is missing (set both or neither)")
        settings = S3Settings(endpoint, shown(endpoint), region, prefix, key_id, secret)
        return await S3Backend.open(settings)
