"""`python -m providers.keyvalue_nats`: read host data from stdin and serve."""

from providers.keyvalue_nats.provider import NatsKeyValueProvider
from providers.sdk import run

if __name__ == "__main__":
    run(NatsKeyValueProvider)
