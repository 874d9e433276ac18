"""Example providers written with the SDK (see docs/providers.md)."""
