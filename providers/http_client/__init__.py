"""`builtin://http-client`: serves `wasi:http/outgoing-handler` for linked components."""
