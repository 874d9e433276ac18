"""keyvalue-vault: wasi:keyvalue on a Vault / OpenBao KV version 2 secrets engine.

Run with `python -m providers.keyvalue_vault`. Link target config: `addr`
(`http://host:8200`, required), `mount` (default `secret`), optional `page_size`; the
token comes from target secret `token` (target config `token` only as a fallback).
Each key is one secret `{mount}/data/{bucket}/{escaped key}`; see `store.py`.
"""

from providers.keyvalue_vault.provider import VaultKeyValueProvider

__all__ = ["VaultKeyValueProvider"]
