"""blobstore-s3: wasi:blobstore on S3 (or an S3-compatible server) through aiobotocore.

Run with `python -m providers.blobstore_s3`. Link target config: `endpoint` (required),
`region` (default `us-east-1`), `bucket_prefix` (default `blob-`), optional
`page_size` and `upload_timeout`; target *secrets* `access_key_id` and
`secret_access_key`. Container `c` is the bucket `{bucket_prefix}c`; see `store.py`.
"""

from providers.blobstore_s3.provider import S3BlobstoreProvider

__all__ = ["S3BlobstoreProvider"]
