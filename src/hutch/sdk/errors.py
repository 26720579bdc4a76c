"""The SDK's one error tree, and the one place that turns HTTP failures into it.

    HutchError                      anything the SDK raises on purpose
    ├── ConfigurationError                no API key (set HUTCH_API_KEY), a bad URL
    ├── InvalidRequestError         400  a field of the request is wrong (``fields`` says which)
    ├── AuthenticationError         401  the key is missing, invalid or revoked
    ├── NotFoundError               404  no such object, or another user's (the same answer)
    ├── ConflictError               409  the object's state forbids this now
    ├── RateLimitError              429  over a cap; ``retry_after`` when the server said
    ├── ServerUnavailableError      503  the server (or what it needs) is down; also no
    │                                    connection at all (``status`` is then None)
    ├── RequestTimeoutError              no answer in time; a POST may still have happened
    ├── StreamError                      a streamed answer broke off or said it failed
    └── CommandError                     ``check=True`` and the command failed; ``.result``

Other statuses (403, 413, 5xx) are a plain :class:`HutchError` with ``status`` set. Every
message says what to do next. The server's own words are kept in ``reason`` and
``fields``, its request id in ``request_id`` (quote it to the operator).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from hutch.sdk.commands import CommandResult

__all__ = [
    "AuthenticationError",
    "CommandError",
    "ConfigurationError",
    "ConflictError",
    "HutchError",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitError",
    "RequestTimeoutError",
    "ServerUnavailableError",
    "StreamError",
]


class HutchError(Exception):
    """Base of every error the SDK raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        fields: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        """The HTTP status, when the server answered."""
        self.reason = reason
        """The server's own explanation, unedited."""
        self.fields = dict(fields or {})
        """Each request field at fault, with why (CreateOS ``fail`` data)."""
        self.request_id = request_id


class ConfigurationError(HutchError):
    """The SDK is not set up to talk to a server (no key, say)."""


class InvalidRequestError(HutchError):
    """400: a field of the request is wrong; ``fields`` names it."""


class AuthenticationError(HutchError):
    """401: the API key is missing, invalid or revoked."""


class NotFoundError(HutchError):
    """404: no such object, or another user's (the server gives the same answer)."""


class ConflictError(HutchError):
    """409: the object's state forbids this now."""


class _Retryable(HutchError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        reason: str | None = None,
        fields: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status=status, reason=reason, fields=fields,
                         request_id=request_id)  # fmt: skip
        self.retry_after = retry_after
        """Seconds the server asked to wait (``Retry-After``), if it said."""


class RateLimitError(_Retryable):
    """429: over a cap, such as running sandboxes per user."""


class ServerUnavailableError(_Retryable):
    """503, or no connection at all (``status`` None)."""


class RequestTimeoutError(HutchError):
    """No answer in time. For a call that is not idempotent, it may still have taken effect."""


class StreamError(HutchError):
    """A streamed answer (exec output, a download) broke off or reported a failure."""


class CommandError(HutchError):
    """Raised by ``commands.run(..., check=True)`` when the command did not exit 0."""

    def __init__(self, message: str, *, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


_LIST_HINTS = {
    "sandbox": "list yours with Sandbox.list()",
    "network": "list yours with Network.list()",
    "disk": "list yours with Disk.list(), and a sandbox's with sandbox.list_disks()",
    "path": "check the path: it must be absolute and name an existing file",
}

_KEY_HINT = (
    "set HUTCH_API_KEY (or pass api_key=) to a valid key; an operator makes one with "
    "`hutch keys create --user NAME`"
)


def missing_key() -> ConfigurationError:
    return ConfigurationError(f"no API key: {_KEY_HINT}")


def from_response(
    response: httpx.Response, *, subjects: Mapping[str, str], attempts: int = 1
) -> HutchError:
    """The error for a non-2xx ``response`` whose body has been read.

    ``subjects`` name what the call was about (``{"sandbox": "sb_…"}``) so that a 404 can
    say which object is missing; ``attempts`` is how many times the call was sent.
    """
    status = response.status_code
    reason, fields = _parse(response)
    common: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "fields": fields,
        "request_id": response.headers.get("x-request-id"),
    }
    tried = f" (tried {attempts} times)" if attempts > 1 else ""
    match status:
        case 400:
            return InvalidRequestError(_invalid(reason, fields), **common)
        case 401:
            return AuthenticationError(f"the server refused the API key: {reason}; {_KEY_HINT}",
                                       **common)  # fmt: skip
        case 404:
            return NotFoundError(_not_found(reason, fields, subjects), **common)
        case 409:
            return ConflictError(_conflict(reason, fields), **common)
        case 429:
            return RateLimitError(
                f"{reason}{tried}; wait and retry, or kill sandboxes you no longer need "
                "(see Sandbox.list())",
                retry_after=retry_after(response),
                **common,
            )
        case 503:
            return ServerUnavailableError(
                f"{reason}{tried}; the server or something it needs is unavailable, "
                "try again shortly",
                retry_after=retry_after(response),
                **common,
            )
    return HutchError(f"HTTP {status} from {response.request.url.path}: {reason}", **common)


def from_transport(exc: httpx.TransportError, *, api_url: str, attempts: int) -> HutchError:
    """The error for a request that got no answer at all."""
    tried = f" (tried {attempts} times)" if attempts > 1 else ""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return RequestTimeoutError(
            f"{api_url} did not answer in time{tried}; raise the timeout, or check the "
            "object's state before repeating a call that changes something"
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ConfigurationError(
            f"cannot use the API URL {api_url!r} ({exc}); set HUTCH_API_URL (or pass "
            "api_url=) to something like http://127.0.0.1:8700"
        )
    return ServerUnavailableError(
        f"cannot reach hutch at {api_url} ({type(exc).__name__}: {exc}){tried}; is `hutch "
        "serve` running there? Set HUTCH_API_URL (or pass api_url=) to its address"
    )


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number; HTTP dates are taken as absent)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _parse(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """(reason, fields) from a CreateOS JSend body, a Nullspace body, or anything else."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:500] or response.reason_phrase or f"HTTP {response.status_code}"), {}
    if isinstance(body, dict):
        data = body.get("data")
        if body.get("status") == "fail" and isinstance(data, dict):
            fields = {str(k): str(v) for k, v in data.items()}
            reason = "; ".join(v if k == "message" else f"{k}: {v}" for k, v in fields.items())
            return reason, fields
        if body.get("status") == "error" and isinstance(body.get("message"), str):
            return body["message"], {}
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"], {}  # the Nullspace dialect
        if isinstance(error, str):
            return error, {}
    return (response.reason_phrase or f"HTTP {response.status_code}"), {}


def _invalid(reason: str, fields: Mapping[str, str]) -> str:
    named = [k for k in fields if k != "message"]
    if not named:
        return f"the server refused the request: {reason}"
    return f"the server refused the request: {reason}; correct {', '.join(named)} and retry"


def _not_found(reason: str, fields: Mapping[str, str], subjects: Mapping[str, str]) -> str:
    field = next((k for k in fields if k in _LIST_HINTS), None)
    if field is None:
        return f"{reason}; it does not exist, or belongs to another user"
    subject, said = subjects.get(field), fields[field]
    if subject is not None and said in (f"no {field} {subject!r}", f"no {field} {subject}"):
        return (
            f"{field} {subject} does not exist (or belongs to another user); {_LIST_HINTS[field]}"
        )
    return f"{said} (it does not exist, or belongs to another user); {_LIST_HINTS[field]}"


def _conflict(reason: str, fields: Mapping[str, str]) -> str:
    if "status" in fields:
        return f"{reason}; see its status with .refresh() and try again when it allows this"
    if "name" in fields:
        return f"{reason}; choose another name"
    return reason
