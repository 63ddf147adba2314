"""A typed Python client for Bespoke, the self-hosted personalization engine.

:class:`Client` (sync) and :class:`AsyncClient` (async) have the same methods, one per API
operation: send events, put and get users and items, get recommendations (with their reasons),
similar and popular items, rank supplied candidates and ask why an item is not shown, record
impressions and hidden items, save rules, make decisions, reward and evaluate them, define
segments, audiences and experiments, read the fairness report, erase and export users, train,
tune and activate models, manage API keys. Answers are the server's JSON, typed with the
``TypedDict``\\ s of :mod:`bespoke_client.types`; errors are :class:`BespokeError`\\ s carrying
the HTTP status and the server's error code, message and field.

>>> from bespoke_client import Client
>>> with Client("http://127.0.0.1:8080", api_key="bsk_...") as client:
...     client.send_events([{"user": "ann", "item": "sku-1", "type": "view"}])
...     recs = client.recommend("ann", n=5)
"""

__version__ = "0.1.0"

from ._core import ENDPOINTS, Endpoint
from .client import AsyncClient, Client
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    BespokeConnectionError,
    BespokeError,
    BespokeTimeoutError,
    ConflictError,
    GoneError,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    UnprocessableError,
)

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "ENDPOINTS",
    "Endpoint",
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
