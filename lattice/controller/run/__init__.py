"""The controller's async side: everything here talks to NATS.

| module | concern |
|---|---|
| `lease` | leader election: one expiring key, compare-and-set renewals |
| `store` | manifests, their versions, deploy state and history in JetStream KV |
| `observer` | the observed lattice from heartbeats, events and periodic inventory |
| `worker` | runs a plan's commands in phase order, remembers failures for backoff |
| `api` | `wadm.api.{lattice}.model.*` request handlers |
| `service` | the loop: lease → observe → plan → act → publish status |

The pure core (manifests, validation, spread, the plan) lives one level up and is fed
snapshots from here.
"""
