"""messaging-nats: wasmcloud:messaging@0.2.0 over NATS, in both directions.

Run with `python -m providers.messaging_nats` (built in as `builtin://messaging-nats`).

* **Source role** (link provider → component, `wasmcloud:messaging/handler`): the link's
  source config names NATS subjects (`subscriptions`, comma-separated, optional
  `queue_group`, optional `url` of another NATS server); every message on them becomes a
  `handle-message` call of the component over the lattice (`delivery.py`).
* **Target role** (link component → provider, `wasmcloud:messaging/consumer`): the
  component publishes and makes requests on the NATS named by the link's target config
  `url`, else on the lattice NATS (`provider.py`).

Connections to other servers are shared per URL and reconnect forever in the
background (`connections.py`); health is "every connection in use is connected".
See docs/providers.md, "messaging-nats".
"""

from providers.messaging_nats.provider import MessagingNatsProvider

__all__ = ["MessagingNatsProvider"]
