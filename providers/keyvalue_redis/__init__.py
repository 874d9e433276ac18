"""keyvalue-redis: wasi:keyvalue on Redis (or any Redis-protocol server).

Run with `python -m providers.keyvalue_redis`. Link target config: `url`
(`redis://[:password@]host:port/db`, required) and optional `page_size`. Keys are stored
as `{bucket}:{key}` in the link's database; see `store.py`.
"""

from providers.keyvalue_redis.provider import RedisKeyValueProvider

__all__ = ["RedisKeyValueProvider"]
