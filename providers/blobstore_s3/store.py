"""S3 buckets as a wasi:blobstore store, through aiobotocore.

Layout: container `c` is the bucket `{prefix}c` (path-style addressing), object `name`
the key `name`. Writes hold at most one part in memory: parts are collected up to
`PART_SIZE` (5 MiB, S3's minimum part size); an object that ends before that is one
`PutObject`, a larger one a multipart upload whose parts go up as they fill, completed
on commit. S3 shows an object only once PutObject or CompleteMultipartUpload has
succeeded, so a reader never sees half of it; an aborted write aborts its multipart
upload. Reads are ranged GETs of at most one chunk; copy is a server-side CopyObject
(objects up to 5 GiB); move is copy, then delete.

botocore's own retries are off (`total_max_attempts=1`): a CompleteMultipartUpload
repeated after a lost answer would report "no such upload" for an object that was
written. Errors are mapped here: NoSuchBucket -> no such container, 404/NoSuchKey ->
no such object, access errors -> "access denied" (never with the key), cannot connect
-> `Unavailable`, a write with no answer -> `Indeterminate`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions as bx
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from providers.blobstore.backend import Backend, ObjectMeta, Writer
from providers.blobstore.semantics import (
    BlobError,
    Indeterminate,
    Unavailable,
    container_exists,
    no_container,
)
from providers.blobstore.semantics import no_object as _no_object

PART_SIZE = 5 * 1024 * 1024
DELETE_BATCH = 1000
ACCESS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403"}


@dataclass(frozen=True)
class S3Settings:
    endpoint: str
    shown: str
    region: str
    prefix: str
    key_id: str | None = field(repr=False)
    secret: str | None = field(repr=False)


def _code(exc: bx.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _errors(
    where: str, container: str | None = None, name: str | None = None, *, write: bool = False
) -> Iterator[None]:
    lost = Indeterminate if write else Unavailable
    try:
        yield
    except bx.ClientError as exc:
        code = _code(exc)
        if code == "NoSuchBucket" and container is not None:
            raise no_container(container) from None
        if code in ("NoSuchKey", "404", "NotFound") and name is not None and container:
            raise _no_object(container, name) from None
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists") and container:
            raise container_exists(container) from None
        if code in ACCESS:
            raise BlobError(f"s3 at {where}: access denied (check the link's access key)") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status in (500, 502, 503, 504):
            raise lost("s3", f"{where} answered {status} {code}") from None
        message = exc.response.get("Error", {}).get("Message", "") or code
        raise BlobError(f"s3 error: {code}: {message}") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError) as exc:
        raise Unavailable("s3", f"cannot reach {where} ({type(exc).__name__})") from None
    except (bx.ReadTimeoutError, bx.ConnectionClosedError) as exc:
        raise lost("s3", f"no answer from {where} ({type(exc).__name__})") from None


class _S3Writer(Writer):
    def __init__(self, b: S3Backend, container: str, name: str) -> None:
        self._b, self._container, self._name = b, container, name
        self._bucket = b.bucket(container)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _err(self, *, write: bool = True) -> contextlib.AbstractContextManager[None]:
        return _errors(self._b.where, self._container, self._name, write=write)

    async def _flush(self) -> None:
        s3 = self._b.client
        if self._upload_id is None:
            with self._err(write=False):
                resp = await s3.create_multipart_upload(Bucket=self._bucket, Key=self._name)
            self._upload_id = resp["UploadId"]
        number = len(self._parts) + 1
        body, self._buf = bytes(self._buf), bytearray()
        with self._err():
            resp = await s3.upload_part(
                Bucket=self._bucket,
                Key=self._name,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        self._parts.append({"ETag": resp["ETag"], "PartNumber": number})

    async def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= PART_SIZE:
            await self._flush()

    async def commit(self) -> None:
        s3 = self._b.client
        if self._upload_id is None:
            body, self._buf = bytes(self._buf), bytearray()
            with self._err():
                await s3.put_object(Bucket=self._bucket, Key=self._name, Body=body)
            return
        if self._buf:
            await self._flush()
        with self._err():
            await s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._name,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._upload_id = None

    async def abort(self) -> None:
        self._buf = bytearray()
        upload, self._upload_id = self._upload_id, None
        if upload is None:
            return
        with contextlib.suppress(Exception):
            await self._b.client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._name, UploadId=upload
            )


class S3Backend(Backend):
    backend = "s3"

    def __init__(self, settings: S3Settings, client: Any, stack: contextlib.AsyncExitStack) -> None:
        self._s = settings
        self.client = client
        self._stack = stack

    @classmethod
    async def open(cls, s: S3Settings) -> S3Backend:
        config = AioConfig(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=3,
            read_timeout=15,
            signature_version="s3v4",
        )
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=s.endpoint,
                region_name=s.region,
                aws_access_key_id=s.key_id,
                aws_secret_access_key=s.secret,
                config=config,
            )
        )
        return cls(s, client, stack)

    @property
    def where(self) -> str:
        return f"s3 {self._s.shown} buckets {self._s.prefix}*"

    def bucket(self, container: str) -> str:
        return f"{self._s.prefix}{container}"

    def _err(
        self, container: str | None = None, name: str | None = None, *, write: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        return _errors(self._s.shown, container, name, write=write)

    # ------------------------------------------------------------------ containers

    async def create_container(self, container: str) -> None:
        bucket = self.bucket(container)
        if len(bucket) < 3:
            raise BlobError(f"bucket name {bucket!r} is shorter than S3's 3 characters")
        if await self.container_exists(container):
            raise container_exists(container)
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self._s.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._s.region}
        with self._err(container, write=True):
            await self.client.create_bucket(**kwargs)

    async def delete_container(self, container: str) -> None:
        if not await self.container_exists(container):
            raise no_container(container)
        await self.clear(container)
        bucket = self.bucket(container)
        with self._err(container, write=True):
            uploads = await self.client.list_multipart_uploads(Bucket=bucket)
            for up in uploads.get("Uploads", []):
                with contextlib.suppress(bx.ClientError):
                    await self.client.abort_multipart_upload(
                        Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]
                    )
            await self.client.delete_bucket(Bucket=bucket)

    async def container_exists(self, container: str) -> bool:
        try:
            with self._err(container):
                await self.client.head_bucket(Bucket=self.bucket(container))
        except BlobError as exc:
            if isinstance(exc, Unavailable):
                raise
            return False
        return True

    async def container_created(self, container: str) -> int:
        if not await self.container_exists(container):
            raise no_container(container)
        bucket = self.bucket(container)
        with self._err(container):
            resp = await self.client.list_buckets()
        for b in resp.get("Buckets", []):
            if b.get("Name") == bucket and b.get("CreationDate") is not None:
                return int(b["CreationDate"].timestamp())
        return 0

    async def list_objects(
        self, container: str, after: str | None, limit: int
    ) -> tuple[list[str], bool]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket(container), "MaxKeys": limit}
        if after is not None:
            kwargs["StartAfter"] = after
        with self._err(container):
            resp = await self.client.list_objects_v2(**kwargs)
        names = [o["Key"] for o in resp.get("Contents", [])]
        return names, bool(resp.get("IsTruncated"))

    async def clear(self, container: str) -> None:
        while True:
            names, more = await self.list_objects(container, None, DELETE_BATCH)
            if names:
                await self.delete_objects(container, names)
            if not more:
                return

    # ------------------------------------------------------------------ objects

    async def _head(self, container: str, name: str) -> dict[str, Any]:
        try:
            with self._err(container, name):
                return await self.client.head_object(Bucket=self.bucket(container), Key=name)
        except BlobError as exc:
            if str(exc) == str(_no_object(container, name)) and not await self.container_exists(
                container
            ):
                raise no_container(container) from None
            raise

    async def object_info(self, container: str, name: str) -> ObjectMeta:
        head = await self._head(container, name)
        created = head.get("LastModified")
        return ObjectMeta(
            size=int(head.get("ContentLength", 0)),
            created_at=int(created.timestamp()) if created is not None else 0,
        )

    async def read(
        self, container: str, name: str, start: int, length: int
    ) -> tuple[bytes, int, str]:
        rng = f"bytes={start}-{start + length - 1}"
        try:
            with self._err(container, name):
                resp = await self.client.get_object(
                    Bucket=self.bucket(container), Key=name, Range=rng
                )
                async with resp["Body"] as body:
                    data = await body.read()
        except BlobError as exc:
            if "InvalidRange" not in str(exc):
                if str(exc) == str(_no_object(container, name)):
                    await self._head(container, name)  # no such container, if it is that
                raise
            head = await self._head(container, name)
            return b"", int(head.get("ContentLength", 0)), str(head.get("ETag", ""))
        total = resp.get("ContentRange", "").rpartition("/")[2]
        size = int(total) if total.isdigit() else int(resp.get("ContentLength", len(data)))
        return data[:length], size, str(resp.get("ETag", ""))

    async def delete_object(self, container: str, name: str) -> None:
        with self._err(container, write=True):
            await self.client.delete_object(Bucket=self.bucket(container), Key=name)

    async def delete_objects(self, container: str, names: list[str]) -> None:
        if not await self.container_exists(container):
            raise no_container(container)
        for i in range(0, len(names), DELETE_BATCH):
            batch = [{"Key": n} for n in names[i : i + DELETE_BATCH]]
            with self._err(container, write=True):
                await self.client.delete_objects(
                    Bucket=self.bucket(container), Delete={"Objects": batch, "Quiet": True}
                )

    async def begin_write(self, container: str, name: str) -> Writer:
        if not await self.container_exists(container):
            raise no_container(container)
        return _S3Writer(self, container, name)

    async def copy(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        await self._head(*src)
        if src == dest:
            return
        with self._err(dest[0], write=True):
            await self.client.copy_object(
                Bucket=self.bucket(dest[0]),
                Key=dest[1],
                CopySource={"Bucket": self.bucket(src[0]), "Key": src[1]},
            )

    async def ping(self) -> None:
        with self._err():
            await self.client.list_buckets()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()
