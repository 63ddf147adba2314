"""The exceptions the client raises.

Everything the client raises is a :class:`BespokeError`. An answer from the server with a 4xx
or 5xx status is an :class:`APIError` (a subclass chosen by the status) carrying the status and
the server's JSON error, ``{"error": {"code", "message", "field"}}``; a request that got no
answer at all (refused connection, timeout) is a :class:`BespokeConnectionError`.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "BespokeError",
    "BespokeConnectionError",
    "BespokeTimeoutError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "GoneError",
    "PayloadTooLargeError",
    "UnprocessableError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "InsufficientStorageError",
]


class BespokeError(Exception):
    """The base of every exception this client raises."""


class BespokeConnectionError(BespokeError):
    """The request got no answer: the connection failed or broke off."""


class BespokeTimeoutError(BespokeConnectionError):
    """The request got no answer within the client's timeout."""


class APIError(BespokeError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        code: the server's stable machine-readable code (``invalid_field``, ``not_found``,
            ``event_conflict``, ...); ``"http_<status>"`` when the body was not the server's
            JSON error (a proxy's page, say).
        message: the server's message, for people.
        field: the JSON path, query parameter or header at fault, when the server names one.
        retry_after: seconds to wait before trying again, from the ``Retry-After`` header
            (429 and 503 send it), else ``None``.
        body: the decoded JSON body, or ``None`` when it was not JSON.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: Optional[str] = None,
        retry_after: Optional[float] = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" (field {field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.body = body


class BadRequestError(APIError):
    """400: the request was invalid; ``field`` names what was at fault."""


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(APIError):
    """403: the API key lacks the scope this route needs."""


class NotFoundError(APIError):
    """404: no such user, item, decision, model version or erasure receipt."""


class ConflictError(APIError):
    """409: e.g. an ``event_id`` reused for a different event, or a training already running."""


class GoneError(APIError):
    """410: e.g. a decision whose reward window has closed."""


class PayloadTooLargeError(APIError):
    """413: the body is larger than the server's ``limits.max_body_bytes``."""


class UnprocessableError(APIError):
    """422: valid JSON that cannot be applied (e.g. an embedding of another dimension)."""


class RateLimitError(APIError):
    """429: the key is over its rate; wait ``retry_after`` seconds."""


class ServerError(APIError):
    """5xx: the server's own failure, not the caller's."""


class ServiceUnavailableError(ServerError):
    """503: the server is shutting down or its store is unreachable; wait ``retry_after``."""


class InsufficientStorageError(ServerError):
    """507: the server's disk is full; nothing was stored."""


_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: RateLimitError,
    503: ServiceUnavailableError,
    507: InsufficientStorageError,
}


def error_for(status: int, body: Any, headers: Mapping[str, str]) -> APIError:
    """The exception for an error answer: its class chosen by ``status``, its fields read from
    the server's JSON error when ``body`` is one."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    code, message, field = f"http_{status}", f"HTTP {status}", None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code", code))
        message = str(error.get("message", message))
        field = error.get("field") if isinstance(error.get("field"), str) else None
    return cls(status, code, message, field, _retry_after(headers.get("retry-after")), body)


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header given in seconds; ``None`` for anything else."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)
