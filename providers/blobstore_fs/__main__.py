"""`python -m providers.blobstore_fs`: read host data from stdin and serve."""

from providers.blobstore_fs.provider import FsBlobstoreProvider
from providers.sdk import run

if __name__ == "__main__":
    run(FsBlobstoreProvider)
