"""`python -m providers.keyvalue_redis`: read host data from stdin and serve."""

from providers.keyvalue_redis.provider import RedisKeyValueProvider
from providers.sdk import run

if __name__ == "__main__":
    run(RedisKeyValueProvider)
