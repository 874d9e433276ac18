"""keyvalue-nats: wasi:keyvalue on a NATS JetStream key-value bucket.

Run with `python -m providers.keyvalue_nats`. Link target config: `bucket` (the
JetStream KV bucket, created if missing; required), optional `url` (another NATS
server; default: the lattice's own connection) and `page_size`. Keys are stored as
`{wasi bucket}.{escaped key}` in that JetStream bucket; see `store.py`.
"""

from providers.keyvalue_nats.provider import NatsKeyValueProvider

__all__ = ["NatsKeyValueProvider"]
