"""`python -m providers.sqldb_postgres`: read host data from stdin and serve."""

from providers.sdk import run
from providers.sqldb_postgres.provider import PostgresProvider

if __name__ == "__main__":
    run(PostgresProvider)
