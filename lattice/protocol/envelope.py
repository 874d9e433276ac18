"""The control-interface reply envelope: `{"success", "message", "response"}`.

Every control request is answered with one of these, also when the request is
malformed, so a client never waits out a timeout to learn it was wrong.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


class CtlReply(BaseModel):
    success: bool
    message: str = ""
    response: Any = None

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {"success": self.success, "message": self.message}
        if self.response is not None:
            body["response"] = self.response
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CtlReply:
        return cls.model_validate_json(data)


def ok(response: Any = None, message: str = "") -> CtlReply:
    return CtlReply(success=True, message=message, response=response)


def fail(message: str) -> CtlReply:
    return CtlReply(success=False, message=message)
