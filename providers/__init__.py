"""Capability providers: separate processes a host starts to give components a capability.

`providers.sdk` is the small SDK every provider is written with; `providers.keyvalue`
holds the wasi:keyvalue semantics shared by the built-in key-value providers
(`keyvalue_redis`, `keyvalue_vault`, `keyvalue_nats`), each runnable with
`python -m providers.<name>`. See docs/providers.md.
"""
