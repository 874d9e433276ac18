"""Why a call failed, in one line, from wasmtime's error and the guest's stderr (pure)."""

from __future__ import annotations

from host.runtime import traps

# What componentize-py's CPython printed when `bytearray(16 MiB)` met the store's memory
# cap (the runaway component's `hog`): it could not format the MemoryError, so it dumped it.
DUMPED = """Traceback (most recent call last):
  File "/0/app.py", line 18, in hog
object address  : 0x480ba8
object refcount : 2
object type     : 0x373230
object type name: MemoryError
object repr     : MemoryError()
lost sys.stderr

thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1280:25:
Python function threw an unexpected exception
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
"""
TRAP = (
    "error while executing at wasm backtrace:\n    0: 0x1a2b - <unknown>!f\nwasm trap: unreachable"
)


def test_an_exception_cpython_could_not_print_is_named_and_counts_as_out_of_memory() -> None:
    assert traps.guest_reason(DUMPED) == "MemoryError()"
    assert traps.summarize(TRAP, DUMPED) == "MemoryError()"
    assert traps.is_out_of_memory(TRAP, DUMPED)
    assert not traps.is_interrupt(TRAP)


def test_a_printed_traceback_and_a_panic() -> None:
    printed = 'Traceback (most recent call last):\n  File "x", line 1\nRuntimeError: boom\n'
    assert traps.summarize(TRAP, printed) == "RuntimeError: boom"
    assert not traps.is_out_of_memory(TRAP, printed)
    panic = "thread 'main' panicked at src/lib.rs:3:5:\nindex out of bounds\n"
    assert traps.summarize(TRAP, panic) == "index out of bounds"
    assert traps.summarize(TRAP, "") == "wasm trap: unreachable"
