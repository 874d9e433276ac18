"""Lattice events as CloudEvents 1.0 JSON.

Event payloads are built by pure functions here; `cloud_event` wraps one with the
envelope fields and `encode` checks its size so a host never publishes something the
NATS server would refuse. Types are `com.wasmcloud.lattice.{type}` on subject
`wasmbus.evt.{lattice}.{type}`, as in wasmCloud v1.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

TYPE_PREFIX = "com.wasmcloud.lattice."
MAX_EVENT_BYTES = 900 * 1024  # below NATS' default 1 MiB max_payload


class EventTooLarge(ValueError):
    pass


def cloud_event(source: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": TYPE_PREFIX + event_type,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }


def encode(event: dict[str, Any]) -> bytes:
    body = json.dumps(event, separators=(",", ":"), default=str).encode()
    if len(body) > MAX_EVENT_BYTES:
        raise EventTooLarge(f"event {event.get('type')} is {len(body)} bytes")
    return body


def short_type(full_type: str) -> str:
    return full_type.removeprefix(TYPE_PREFIX)


def host_started(host_id: str, friendly_name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"host_id": host_id, "friendly_name": friendly_name, "labels": labels}


def host_stopped(host_id: str, labels: dict[str, str], reason: str) -> dict[str, Any]:
    return {"host_id": host_id, "labels": labels, "reason": reason}


def host_heartbeat(inventory: dict[str, Any]) -> dict[str, Any]:
    return inventory


def component_scaled(
    host_id: str,
    component_id: str,
    image_ref: str,
    max_instances: int,
    annotations: dict[str, str],
) -> dict[str, Any]:
    return {
        "host_id": host_id,
        "component_id": component_id,
        "image_ref": image_ref,
        "max_instances": max_instances,
        "annotations": annotations,
    }


def component_scale_failed(
    host_id: str,
    component_id: str,
    image_ref: str,
    max_instances: int,
    annotations: dict[str, str],
    error: str,
) -> dict[str, Any]:
    data = component_scaled(host_id, component_id, image_ref, max_instances, annotations)
    data["error"] = error
    return data


def labels_changed(host_id: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"host_id": host_id, "labels": labels}


# -- liveness beats (not CloudEvents: see docs/protocol.md, "Liveness") ------------------

BEAT_PREFIX = "wasmbus.beat"


def beat_subject(lattice: str, host_id: str) -> str:
    """Where a host's liveness beats go: off `wasmbus.evt.>`, so event watchers and
    event streams never see one message per host per second."""
    return f"{BEAT_PREFIX}.{lattice}.{host_id}"


def beat_wildcard(lattice: str) -> str:
    return f"{BEAT_PREFIX}.{lattice}.*"


def beat(host_id: str, seq: int, interval: float) -> bytes:
    """A beat: who, which one (a sequence number from 1 per host process), and how
    often they come, so a listener knows when one is overdue."""
    return json.dumps(
        {"host_id": host_id, "seq": seq, "interval": interval}, separators=(",", ":")
    ).encode()


def parse_beat(body: bytes) -> tuple[str, int, float] | None:
    """(host id, sequence, interval) of a beat, or None for anything malformed."""
    try:
        raw = json.loads(body)
        host_id, seq, interval = raw["host_id"], int(raw["seq"]), float(raw["interval"])
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(host_id, str) or not host_id or not 0 < interval <= 60:
        return None
    return host_id, seq, interval
