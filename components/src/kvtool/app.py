"""Kvtool component: every wasi:keyvalue operation as an export, for tests.

Built against `lattice:examples/kvtool-world`.  Each function opens the named bucket, does
one operation and drops the bucket again.  Any keyvalue error, including one from `open`,
comes back as `err(string)`: "no-such-store", "access-denied" or the other(...) message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import atomics, batch, store

T = TypeVar("T")


def error_text(err: store.Error) -> str:
    """A keyvalue error as a string: the case name in kebab case, or other's message."""
    if isinstance(err, store.Error_NoSuchStore):
        return "no-such-store"
    if isinstance(err, store.Error_AccessDenied):
        return "access-denied"
    if isinstance(err, store.Error_Other):
        return err.value
    return repr(err)


@contextmanager
def _keyvalue_errors_as_strings() -> Iterator[None]:
    try:
        yield
    except Err as e:
        raise Err(error_text(e.value)) from None


def _with_bucket(identifier: str, op: Callable[[store.Bucket], T]) -> T:
    with _keyvalue_errors_as_strings(), store.open(identifier) as bucket:
        return op(bucket)


class Kvtool(exports.Kvtool):
    def get(self, bucket: str, key: str) -> bytes | None:
        value = _with_bucket(bucket, lambda b: b.get(key))
        return None if value is None else bytes(value)

    def set(self, bucket: str, key: str, value: bytes) -> None:
        _with_bucket(bucket, lambda b: b.set(key, value))

    def delete(self, bucket: str, key: str) -> None:
        _with_bucket(bucket, lambda b: b.delete(key))

    def exists(self, bucket: str, key: str) -> bool:
        return _with_bucket(bucket, lambda b: b.exists(key))

    def list_keys(self, bucket: str, cursor: int | None) -> tuple[list[str], int | None]:
        response = _with_bucket(bucket, lambda b: b.list_keys(cursor))
        return list(response.keys), response.cursor

    def increment(self, bucket: str, key: str, delta: int) -> int:
        return _with_bucket(bucket, lambda b: atomics.increment(b, key, delta))

    def get_many(self, bucket: str, keys: list[str]) -> list[tuple[str, bytes] | None]:
        return _with_bucket(bucket, lambda b: batch.get_many(b, keys))

    def set_many(self, bucket: str, kvs: list[tuple[str, bytes]]) -> None:
        _with_bucket(bucket, lambda b: batch.set_many(b, kvs))

    def delete_many(self, bucket: str, keys: list[str]) -> None:
        _with_bucket(bucket, lambda b: batch.delete_many(b, keys))
