"""The http-server provider: serves HTTP on local sockets and forwards each request to a
linked component's `wasi:http/incoming-handler` over the lattice, bodies streamed.

Modules: `routes` (source config → routes; Host header then longest path prefix),
`stream` (one exchange over NATS: head, credit-based body chunks both ways),
`provider` (aiohttp servers per address, links, health). See docs/http.md.
"""
