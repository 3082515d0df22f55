"""HTTP errors in the shape OpenAI and llama-server give them:
`{"error": {"code": 400, "message": "...", "type": "invalid_request_error"}}`."""

from __future__ import annotations

from typing import Any

_STATUS = {
    "invalid_request_error": 400,
    "exceed_context_size_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "server_error": 500,
    "not_supported_error": 501,
    "unavailable_error": 503,
}


class APIError(Exception):
    """An error answered to an HTTP client; `type` picks the status code."""

    def __init__(self, message: str, type: str = "invalid_request_error", **extra: Any):
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = _STATUS[type]
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "type": self.type, **self.extra}}


def bad_request(message: str, **extra: Any) -> APIError:
    return APIError(message, "invalid_request_error", **extra)
