"""`python -m providers.http_server`: read host data from stdin and serve."""

from providers.http_server.provider import HttpServerProvider
from providers.sdk import run

if __name__ == "__main__":
    run(HttpServerProvider)
