"""`python -m providers.blobstore_nats`: read host data from stdin and serve."""

from providers.blobstore_nats.provider import NatsBlobstoreProvider
from providers.sdk import run

if __name__ == "__main__":
    run(NatsBlobstoreProvider)
