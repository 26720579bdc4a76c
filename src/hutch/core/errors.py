"""The one error tree of hutch.

Domain code raises these; each API dialect has one handler that renders them in its own
envelope. Nothing outside ``hutch.api`` knows about HTTP, but every error carries the
status a client should see, so the dialects agree on meaning and differ only in shape.

    HutchError                      500  something went wrong on our side
    ├── InvalidInput                400  a field of the request is wrong (``field`` says which)
    ├── Unauthenticated             401  no credentials, or credentials we do not accept
    ├── PaymentRequired             402  pay first (``details`` says how much, where, how)
    ├── PermissionDenied            403  authenticated, but not allowed
    ├── NotFound                    404  missing, or owned by someone else (same body)
    ├── MethodNotAllowed            405  the path exists, the method does not
    ├── Conflict                    409  the object's state forbids this now
    ├── PayloadTooLarge             413  the body is over the limit for this route
    ├── RateLimited                 429  over a per-user cap or a request rate
    └── Unavailable                 503  a dependency (the database, a host) cannot be reached
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "Conflict",
    "HutchError",
    "InvalidInput",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PaymentRequired",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
]


class HutchError(Exception):
    """Base of every error hutch raises on purpose.

    ``code`` is a stable snake_case identifier for machines, ``message`` a sentence for
    people that says what to do next, ``field`` the request field at fault, if any, and
    ``fields`` every field at fault with its own reason when there are several.
    ``headers`` are added to the response (``Retry-After`` on a 429, say). ``bare`` asks
    for the message alone where a dialect would otherwise key it by field (some CreateOS
    answers are ``{"status": "fail", "data": "<message>"}``).
    """

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        fields: Mapping[str, str] | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        bare: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.fields = dict(fields) if fields else None
        self.code = code or self.default_code
        self.headers = dict(headers) if headers else None
        self.bare = bare


class InvalidInput(HutchError):
    status = 400
    default_code = "invalid_request"


class Unauthenticated(HutchError):
    status = 401
    default_code = "unauthorized"


class PaymentRequired(HutchError):
    """``details`` are the quote: the fields a client needs to pay, shown beside the error."""

    status = 402
    default_code = "payment_required"

    def __init__(self, message: str, *, details: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.details = dict(details)


class PermissionDenied(HutchError):
    status = 403
    default_code = "forbidden"


class NotFound(HutchError):
    status = 404
    default_code = "not_found"


class MethodNotAllowed(HutchError):
    status = 405
    default_code = "method_not_allowed"


class Conflict(HutchError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(HutchError):
    status = 413
    default_code = "payload_too_large"


class RateLimited(HutchError):
    status = 429
    default_code = "rate_limited"


class Unavailable(HutchError):
    status = 503
    default_code = "unavailable"
