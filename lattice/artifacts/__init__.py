"""Component artifacts: references, digests, the local cache, the lattice's object
store, OCI registries, and compiled artifacts shared across a lattice.

Pure modules: `refs`, `wasm`, `layout`. I/O adapters: `cache` (disk), `store` (NATS
JetStream object store), `oci` (HTTP distribution API), `compiled` (shared compiled
artifacts and their lease), `fetch` (ref → verified bytes). CLI commands: `commands`.
"""
