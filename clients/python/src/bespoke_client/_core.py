"""The request and response layer that :class:`Client` and :class:`AsyncClient` share.

Each API operation the client calls is declared once, as an :class:`Endpoint` named by its
``operationId`` in the server's ``/openapi.json``, with the query parameters and top-level body
fields the client may send. A method builds a :class:`Call` against its endpoint (which refuses
any parameter the endpoint does not declare), the sync or async client sends it, and
:func:`decode` turns the answer into JSON or an :class:`~bespoke_client.errors.APIError`. The
test suite checks :data:`ENDPOINTS` against a live server's OpenAPI document, so a route or
parameter the server drops fails CI instead of failing users.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote

import httpx

from .errors import (
    APIError,
    BespokeConnectionError,
    BespokeError,
    BespokeTimeoutError,
    RateLimitError,
    ServiceUnavailableError,
    error_for,
)
from .types import Event

Timeout = Union[None, float, httpx.Timeout]
"""Seconds (connect, read, write and pool alike), an :class:`httpx.Timeout`, or ``None`` for no
limit."""

DEFAULT_TIMEOUT = 30.0
"""Seconds a request may take, unless the client or the call says otherwise."""

TRAIN_TIMEOUT = 600.0
"""Seconds :meth:`Client.train` and :meth:`Client.tune` wait by default: they can take minutes."""

MAX_BATCH_EVENTS = 10_000
"""The server's default ``limits.max_batch_events``: larger batches are split."""

MAX_RETRY_WAIT = 30.0
"""The longest the client sleeps before a retry, whatever ``Retry-After`` says."""

_RANKING_QUERY = (
    "category",
    "exclude",
    "explain",
    "diversity",
    "filter",
    "boost",
    "promote",
    "max_per_category",
    "skip_rules",
)
_RERANK = (
    "max_impressions",
    "impression_window",
    "no_repeat_lists",
    "hide_similar",
    "calibration",
    "popularity",
    "popularity_method",
    "protected",
    "protected_share",
    "protected_alpha",
)
"""The no-repeat, hiding and fairness re-ranker parameters every ranking route takes, in the
query or in the body alike."""
_RANKING_QUERY = _RANKING_QUERY + _RERANK
_RANKING_BODY = _RERANK + (
    "model",
    "context",
    "explain",
    "diversity",
    "filter",
    "boost",
    "promote",
    "max_per_category",
    "skip_rules",
)


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API, as the client calls it.

    Attributes:
        operation_id: its ``operationId`` in ``/openapi.json``.
        method: the HTTP method.
        path: the path template, with ``{name}`` for each path parameter.
        query: the query parameters the client may send.
        body: the top-level JSON body fields the client may send (empty: no body).
        retry_safe: sending it twice does no harm (reads, replacements, deletions, and events,
            whose ids the client fixes before the first attempt), so a request that got no
            answer may be sent again.
    """

    operation_id: str
    method: str
    path: str
    query: Tuple[str, ...] = ()
    body: Tuple[str, ...] = ()
    retry_safe: bool = True


def _endpoints(*endpoints: Endpoint) -> Dict[str, Endpoint]:
    return {e.operation_id: e for e in endpoints}


ENDPOINTS: Dict[str, Endpoint] = _endpoints(
    Endpoint("healthz", "GET", "/healthz"),
    Endpoint("openapi", "GET", "/openapi.json"),
    Endpoint("postEvents", "POST", "/v1/events", body=("events",)),
    Endpoint("getUserEvents", "GET", "/v1/users/{key}/events", query=("limit", "cursor")),
    Endpoint("deleteUserEvents", "DELETE", "/v1/users/{key}/events", query=("item", "type")),
    Endpoint("putUser", "PUT", "/v1/users/{key}", body=("attributes", "consent")),
    Endpoint("getUser", "GET", "/v1/users/{key}"),
    Endpoint("deleteUser", "DELETE", "/v1/users/{key}", query=("retrain",)),
    Endpoint("exportUser", "GET", "/v1/users/{key}/export"),
    Endpoint("getErasure", "GET", "/v1/erasures/{key}"),
    Endpoint(
        "putItem",
        "PUT",
        "/v1/items/{key}",
        body=("categories", "text", "numeric", "attributes", "embeddings", "available"),
    ),
    Endpoint("getItem", "GET", "/v1/items/{key}"),
    Endpoint("deleteItem", "DELETE", "/v1/items/{key}"),
    Endpoint(
        "getRecommendations",
        "GET",
        "/v1/users/{key}/recommendations",
        query=("n", "model", "include_seen") + _RANKING_QUERY,
    ),
    Endpoint(
        "recommendSession",
        "POST",
        "/v1/recommendations",
        body=("items", "n", "categories", "exclude", "include_seen", "user") + _RANKING_BODY,
    ),
    Endpoint(
        "getSimilar",
        "GET",
        "/v1/items/{key}/similar",
        query=("n", "model", "user") + _RANKING_QUERY,
    ),
    Endpoint(
        "getPopular",
        "GET",
        "/v1/popular",
        query=("n", "window", "sort", "user") + _RANKING_QUERY,
    ),
    Endpoint(
        "rankItems", "POST", "/v1/users/{key}/rank", body=("items", "history") + _RANKING_BODY
    ),
    Endpoint(
        "decide",
        "POST",
        "/v1/loops/{key}/decisions",
        body=(
            "actions",
            "context",
            "user",
            "slots",
            "baseline",
            "exclude",
            "decision_id",
            "defer_activation",
        ),
        retry_safe=False,
    ),
    Endpoint(
        "rewardDecision",
        "POST",
        "/v1/decisions/{key}/reward",
        body=("value", "slot"),
        retry_safe=False,
    ),
    Endpoint("trainModels", "POST", "/v1/models/train", query=("wait",), retry_safe=False),
    Endpoint("listModels", "GET", "/v1/models"),
    # What users were shown, and what they hid.
    Endpoint("postImpressions", "POST", "/v1/impressions", body=("impressions",), retry_safe=False),
    Endpoint("getHidden", "GET", "/v1/users/{key}/hidden"),
    Endpoint("hideItem", "PUT", "/v1/users/{key}/hidden/{item}"),
    Endpoint("unhideItem", "DELETE", "/v1/users/{key}/hidden/{item}"),
    Endpoint(
        "whyNot",
        "GET",
        "/v1/users/{key}/explain",
        query=("item", "n", "model", "include_seen")
        + tuple(q for q in _RANKING_QUERY if q != "explain"),
    ),
    # Saved business rules.
    Endpoint("listRules", "GET", "/v1/rules"),
    Endpoint("getRule", "GET", "/v1/rules/{key}"),
    Endpoint(
        "putRule",
        "PUT",
        "/v1/rules/{key}",
        body=("filter", "boost", "promote", "max_per_category", "routes", "enabled", "description"),
    ),
    Endpoint("deleteRule", "DELETE", "/v1/rules/{key}"),
    # Decision loops.
    Endpoint("listLoops", "GET", "/v1/loops"),
    Endpoint("getLoop", "GET", "/v1/loops/{key}"),
    Endpoint(
        "putLoop",
        "PUT",
        "/v1/loops/{key}",
        body=(
            "learner",
            "mode",
            "reward_wait_seconds",
            "default_reward",
            "reward_range",
            "max_actions",
            "explanation_terms",
        ),
    ),
    Endpoint("activateDecision", "POST", "/v1/decisions/{key}/activate"),
    Endpoint("evaluateLoop", "GET", "/v1/loops/{key}/evaluation", query=("max_decisions",)),
    Endpoint(
        "applyCandidate",
        "POST",
        "/v1/loops/{key}/evaluation/apply",
        body=("candidate",),
        retry_safe=False,
    ),
    # Segments and audiences.
    Endpoint("listSegments", "GET", "/v1/segments"),
    Endpoint("getSegment", "GET", "/v1/segments/{key}"),
    Endpoint(
        "putSegment",
        "PUT",
        "/v1/segments/{key}",
        body=("kind", "expression", "k", "seed", "refresh", "description", "export"),
    ),
    Endpoint("deleteSegment", "DELETE", "/v1/segments/{key}"),
    Endpoint("refreshSegment", "POST", "/v1/segments/{key}/refresh"),
    Endpoint(
        "segmentMembers", "GET", "/v1/segments/{key}/members", query=("cluster", "limit", "cursor")
    ),
    Endpoint("segmentSizes", "GET", "/v1/segments/{key}/sizes"),
    Endpoint("userSegments", "GET", "/v1/users/{key}/segments"),
    Endpoint(
        "queryAudience",
        "POST",
        "/v1/audiences/query",
        body=("items", "category", "filter", "n", "threshold"),
    ),
    # Experiments.
    Endpoint("listExperiments", "GET", "/v1/experiments"),
    Endpoint("getExperiment", "GET", "/v1/experiments/{key}"),
    Endpoint(
        "putExperiment",
        "PUT",
        "/v1/experiments/{key}",
        body=(
            "variants",
            "route",
            "holdout",
            "metrics",
            "alpha",
            "mde",
            "pre_period",
            "layer",
            "salt",
            "description",
        ),
    ),
    Endpoint("startExperiment", "POST", "/v1/experiments/{key}/start", retry_safe=False),
    Endpoint("stopExperiment", "POST", "/v1/experiments/{key}/stop", retry_safe=False),
    Endpoint("experimentReport", "GET", "/v1/experiments/{key}/report"),
    Endpoint("deleteExperiment", "DELETE", "/v1/experiments/{key}"),
    # Reports, models and keys (admin).
    Endpoint(
        "fairnessReport",
        "GET",
        "/v1/reports/fairness",
        query=("k", "users", "seed", "user_attribute", "item_attribute", "model")
        + tuple(q for q in _RANKING_QUERY if q not in ("exclude", "explain")),
    ),
    Endpoint(
        "tuneModels", "POST", "/v1/models/tune", query=("wait", "budget"), retry_safe=False
    ),
    Endpoint("activateModel", "POST", "/v1/models/{version}/activate"),
    Endpoint("listKeys", "GET", "/v1/keys"),
    Endpoint(
        "createKey",
        "POST",
        "/v1/keys",
        body=("name", "scopes", "rate_per_second"),
        retry_safe=False,
    ),
    Endpoint("revokeKey", "DELETE", "/v1/keys/{key}"),
    Endpoint("getAudit", "GET", "/v1/audit", query=("limit", "cursor")),
)
"""Every operation the client calls, by ``operationId``."""


class _Unset:
    """The marker of a timeout the call leaves to the client."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()
"""A call's timeout when the client's own applies."""


@dataclass(frozen=True)
class Call:
    """One request, ready to send: an endpoint with its path filled in, its query parameters
    encoded and its body."""

    endpoint: Endpoint
    path: str
    params: List[Tuple[str, str]] = field(default_factory=list)
    body: Optional[Dict[str, Any]] = None
    timeout: Union[Timeout, _Unset] = UNSET

    @property
    def method(self) -> str:
        """The HTTP method."""
        return self.endpoint.method


def call(
    operation_id: str,
    path: Optional[Mapping[str, str]] = None,
    query: Optional[Mapping[str, Any]] = None,
    body: Optional[Mapping[str, Any]] = None,
    timeout: Union[Timeout, _Unset] = UNSET,
) -> Call:
    """Builds a call to ``operation_id``.

    ``None`` values are left out, so optional arguments pass straight through. A query or body
    name the endpoint does not declare is a ``ValueError``: the declaration is what the OpenAPI
    test checks, so the client can send nothing it does not check.
    """
    endpoint = ENDPOINTS[operation_id]
    template = endpoint.path
    for name, value in (path or {}).items():
        if not value:
            raise ValueError(f"{name} must not be empty")
        template = template.replace("{" + name + "}", quote(value, safe=""))
    params: List[Tuple[str, str]] = []
    for name, value in (query or {}).items():
        if value is None:
            continue
        if name not in endpoint.query:
            raise ValueError(f"{operation_id} declares no query parameter {name!r}")
        params.extend((name, v) for v in _encode_query(value))
    json_body: Optional[Dict[str, Any]] = None
    if body is not None:
        json_body = {}
        for name, value in body.items():
            if value is None:
                continue
            if name not in endpoint.body:
                raise ValueError(f"{operation_id} declares no body field {name!r}")
            json_body[name] = value
    return Call(endpoint, template, params, json_body, timeout)


def _encode_query(value: Any) -> List[str]:
    """A query value as the server reads it: booleans as ``true``/``false``, a list of strings
    as repeated parameters, a list of objects (boosts, promotions) as one JSON array."""
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return list(value)
        return [json.dumps(list(value), separators=(",", ":"))]
    if isinstance(value, (dict,)):
        return [json.dumps(value, separators=(",", ":"))]
    return [str(value)]


def decode(response: httpx.Response) -> Any:
    """The JSON of a successful answer (``None`` when it has no body, as a 202 has none);
    raises the :class:`~bespoke_client.errors.APIError` of an error status."""
    body: Any = None
    if response.content:
        try:
            body = response.json()
        except ValueError:
            body = None
            if response.status_code < 400:
                raise BespokeError(
                    f"{response.request.method} {response.request.url.path}: "
                    f"answer is not JSON (status {response.status_code})"
                ) from None
    if response.status_code >= 400:
        raise error_for(response.status_code, body, response.headers)
    return body


def transport_error(error: httpx.TransportError, method: str, path: str) -> BespokeError:
    """The client's exception for a request that got no answer."""
    if isinstance(error, httpx.TimeoutException):
        return BespokeTimeoutError(f"{method} {path}: timed out ({error.__class__.__name__})")
    return BespokeConnectionError(f"{method} {path}: {error}")


def retry_delay(c: Call, error: BespokeError, attempt: int, max_retries: int) -> Optional[float]:
    """Seconds to wait before sending ``c`` again after ``error`` on try number ``attempt``
    (from 0), or ``None`` to raise it.

    A 429 is retried on every route (the server did nothing); a 503, a timeout or a broken
    connection only where sending twice is harmless. The wait is the server's ``Retry-After``
    when it gives one, else 0.5 s doubling per try, never more than :data:`MAX_RETRY_WAIT`.
    """
    if attempt >= max_retries:
        return None
    if isinstance(error, RateLimitError):
        pass
    elif isinstance(error, (ServiceUnavailableError, BespokeConnectionError)):
        if not c.endpoint.retry_safe:
            return None
    else:
        return None
    wait = error.retry_after if isinstance(error, APIError) else None
    if wait is None:
        wait = 0.5 * 2**attempt
    return min(wait, MAX_RETRY_WAIT)


def prepare_events(events: Iterable[Event]) -> List[Event]:
    """Copies of ``events`` with an ``event_id`` on each: a random one where the caller gave
    none, fixed before the first attempt so that a retry (or a resend of the returned list) is
    recognised as the same event rather than stored twice."""
    prepared: List[Event] = []
    for event in events:
        copy: Event = dict(event)  # type: ignore[assignment]
        if not copy.get("event_id"):
            copy["event_id"] = f"py-{uuid.uuid4().hex}"
        prepared.append(copy)
    if not prepared:
        raise ValueError("events must not be empty")
    return prepared


def batches(events: List[Event], size: int) -> List[List[Event]]:
    """``events`` in batches of at most ``size``, each sent as one atomic request."""
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return [events[i : i + size] for i in range(0, len(events), size)]


def auth_headers(api_key: Optional[str]) -> Dict[str, str]:
    """The headers every request carries."""
    from . import __version__

    headers = {"User-Agent": f"bespoke-client-python/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers
