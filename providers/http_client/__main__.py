"""`python -m providers.http_client`: read host data from stdin and serve."""

from providers.http_client.provider import HttpClientProvider
from providers.sdk import run

if __name__ == "__main__":
    run(HttpClientProvider)
