"""The component runtime: wasmtime engine, compile cache, instance pools, exports.

Everything here that calls into wasmtime is blocking; the async host calls it through
`asyncio.to_thread` or a pool's executor, never on the event loop itself.
"""
