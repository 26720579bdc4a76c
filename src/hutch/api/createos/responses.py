"""The error responses CreateOS routes document in OpenAPI."""

from __future__ import annotations

from typing import Any

from hutch.api.envelopes import JSendError, JSendFail

__all__ = ["AUTH_ERRORS", "COMMON_ERRORS", "RATE_LIMITED"]

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": JSendFail, "description": "A field of the request is wrong."},
    413: {"model": JSendFail, "description": "The request body is over the size limit."},
    503: {"model": JSendError, "description": "The database cannot be reached."},
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    401: {"model": JSendFail, "description": "Missing, invalid or revoked API key."},
    403: {
        "model": JSendFail,
        "description": "A sandbox access token, used beyond its own sandbox's allowed routes.",
    },
}
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": JSendFail, "description": "Over your cap of running sandboxes."},
}
