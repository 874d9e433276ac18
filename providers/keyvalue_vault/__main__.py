"""`python -m providers.keyvalue_vault`: read host data from stdin and serve."""

from providers.keyvalue_vault.provider import VaultKeyValueProvider
from providers.sdk import run

if __name__ == "__main__":
    run(VaultKeyValueProvider)
