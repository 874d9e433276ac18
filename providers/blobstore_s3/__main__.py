"""`python -m providers.blobstore_s3`: read host data from stdin and serve."""

from providers.blobstore_s3.provider import S3BlobstoreProvider
from providers.sdk import run

if __name__ == "__main__":
    run(S3BlobstoreProvider)
