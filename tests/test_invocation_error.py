"""InvocationError behaves as an exception everywhere one travels."""

from __future__ import annotations

import contextlib

import pytest

from lattice.protocol.invocation import ErrorKind, InvocationError


@contextlib.contextmanager
def passing() -> object:
    yield


@contextlib.asynccontextmanager
async def passing_async() -> object:
    yield


def test_it_passes_through_a_with_block_as_itself() -> None:
    with pytest.raises(InvocationError) as caught, passing():
        raise InvocationError(ErrorKind.TIMEOUT, "slow")
    assert caught.value.kind is ErrorKind.TIMEOUT and str(caught.value) == "timeout: slow"


async def test_it_passes_through_an_async_with_block_as_itself() -> None:
    with pytest.raises(InvocationError) as caught:
        async with passing_async():
            raise InvocationError(ErrorKind.TRAP, "boom")
    assert caught.value.message == "boom"


def test_the_wire_body_round_trips_and_an_unknown_kind_is_internal() -> None:
    err = InvocationError(ErrorKind.BAD_ARGUMENT, "arg 0")
    back = InvocationError.from_body(err.to_body(), None)
    assert (back.kind, back.message) == (err.kind, err.message)
    odd = InvocationError.from_body({"kind": "martian", "message": "hi"}, None)
    assert odd.kind is ErrorKind.INTERNAL and odd.message == "martian: hi"
