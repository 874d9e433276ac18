"""`wadm.api.{lattice}.model.{verb}[.{name}]`: the controller's request/reply API.

Every controller replica serves the API (a queue group, so one answers each request):
manifests and status live in JetStream KV, so a standby answers as well as the leader.
Replies are JSON `{"result": …, "message": …, …}`; `result` is "error" with a message
naming what was wrong whenever a request cannot be honoured — never a silent timeout.

| verb | body | reply |
|---|---|---|
| put | manifest (YAML or JSON text) | result created/newversion/unchanged, version, warnings |
| get.{name} | `{"version"?}` | manifest, version |
| list | — | models: [{name, latest_version, deployed_version, description, versions, state}] |
| versions.{name} | — | versions: [{version, deployed, stored_at}] |
| del.{name} | `{"version"?}` | deletes one version, or the (undeployed) application |
| deploy.{name} | `{"version"?}` | result acknowledged, version (an older version = rollback) |
| undeploy.{name} | — | result acknowledged |
| status.{name} | — | status: {name, version, state, reason, components: […]} |
| history.{name} | — | history: [{at, action, version}] |
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from lattice.controller.run.store import ManifestStore, StoreError
from lattice.controller.validate import validate

log = structlog.get_logger("lattice.controller.api")

PREFIX = "wadm.api"
NEEDS_NAME = {"get", "versions", "del", "deploy", "undeploy", "status", "history"}

StatusReader = Callable[[str], Awaitable[dict[str, Any] | None]]


def api_subject(lattice: str, verb: str, name: str | None = None) -> str:
    base = f"{PREFIX}.{lattice}.model.{verb}"
    return f"{base}.{name}" if name else base


def error(message: str) -> dict[str, Any]:
    return {"result": "error", "message": message}


class Api:
    def __init__(self, lattice: str, store: ManifestStore, status: StatusReader) -> None:
        self.lattice = lattice
        self.store = store
        self.status = status

    async def handle(self, subject: str, data: bytes) -> dict[str, Any]:
        parts = subject.split(".")
        if len(parts) < 5 or parts[:2] != PREFIX.split(".") or parts[3] != "model":
            return error(f"not a controller API subject: {subject}")
        verb, name = parts[4], ".".join(parts[5:]) or None
        handler = getattr(self, f"_{verb}", None)
        if handler is None:
            verbs = "put, get, list, versions, del, deploy, undeploy, status, history"
            return error(f"unknown operation model.{verb}; operations: {verbs}")
        if verb in NEEDS_NAME and not name:
            example = api_subject(self.lattice, verb, "<name>")
            return error(f"model.{verb} needs the application name: {example}")
        try:
            body = _body(data) if verb != "put" else data
        except ValueError as exc:
            return error(str(exc))
        try:
            return await handler(name, body) if verb in NEEDS_NAME else await handler(body)
        except StoreError as exc:
            return error(str(exc))
        except Exception as exc:
            log.exception("controller API request failed", subject=subject)
            return error(f"model.{verb} failed: {type(exc).__name__}: {exc}")

    async def _put(self, data: bytes) -> dict[str, Any]:
        report = validate(data)
        if report.manifest is None:
            problems = "; ".join(str(p) for p in report.errors)
            return {
                **error(f"invalid manifest: {problems}"),
                "errors": [str(p) for p in report.errors],
            }
        raw = json.loads(report.manifest.model_dump_json(by_alias=True, exclude_none=True))
        result, version, total = await self.store.put(report.manifest, raw)
        return {
            "result": result,
            "name": report.manifest.name,
            "version": version,
            "total_versions": total,
            "warnings": [str(w) for w in report.warnings],
            "message": f"{report.manifest.name} {version} {result}",
        }

    async def _get(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = await self.store.get(name)
        entry = rec.find(body.get("version"))
        if entry is None:
            return error(f"{name} has no version {body.get('version')!r}")
        return {
            "result": "success",
            "version": entry["version"],
            "manifest": entry["manifest"],
            "deployed_version": rec.deployed,
        }

    async def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        models = []
        for rec in await self.store.all():
            status = await self.status(rec.name) if rec.deployed else None
            state = status["state"] if status else ("reconciling" if rec.deployed else "undeployed")
            models.append({**rec.summary(), "state": state})
        return {"result": "success", "models": models}

    async def _versions(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = await self.store.get(name)
        return {
            "result": "success",
            "versions": [
                {
                    "version": v["version"],
                    "deployed": v["version"] == rec.deployed,
                    "stored_at": v["stored_at"],
                }
                for v in rec.versions
            ],
        }

    async def _del(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.store.delete(name, body.get("version"))
        what = f"version {body['version']} of {name}" if body.get("version") else name
        return {"result": "deleted", "message": f"{what} deleted"}

    async def _deploy(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        version = await self.store.deploy(name, body.get("version"))
        return {
            "result": "acknowledged",
            "version": version,
            "message": f"deploying {name} {version}",
        }

    async def _undeploy(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        await self.store.undeploy(name)
        return {"result": "acknowledged", "message": f"undeploying {name}"}

    async def _status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = await self.store.get(name)
        status = await self.status(name)
        if rec.deployed is None:
            status = {
                "name": name,
                "version": None,
                "state": "undeployed",
                "reason": "",
                "components": [],
            }
        elif status is None or status.get("version") != rec.deployed:
            status = {
                "name": name,
                "version": rec.deployed,
                "state": "reconciling",
                "reason": "waiting for the controller",
                "components": [],
            }
        return {"result": "success", "status": status}

    async def _history(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = await self.store.get(name)
        return {"result": "success", "history": rec.history}


def _body(data: bytes) -> dict[str, Any]:
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    if "version" in body and not isinstance(body["version"], str | None):
        raise ValueError("version: must be a string")
    return body
