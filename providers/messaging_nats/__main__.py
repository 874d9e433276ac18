"""`python -m providers.messaging_nats`: read host data from stdin and serve."""

from providers.messaging_nats.provider import MessagingNatsProvider
from providers.sdk import run

if __name__ == "__main__":
    run(MessagingNatsProvider)
