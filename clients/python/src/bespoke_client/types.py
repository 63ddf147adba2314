"""The JSON shapes of requests and answers, as ``TypedDict``\\ s named after the schemas of the
server's ``/openapi.json``.

Answers are the decoded JSON itself (plain ``dict`` and ``list``), so fields a newer server adds
pass through untouched; these types tell a type checker and an editor what to expect. Keys that
are Python keywords (``if``, ``from``) use the functional ``TypedDict`` form.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict, Union

__all__ = [
    "Event",
    "EventsAccepted",
    "StoredEvent",
    "EventPage",
    "Consent",
    "UserIn",
    "User",
    "ItemIn",
    "Item",
    "Deleted",
    "Reason",
    "Contribution",
    "Recommendation",
    "Recommendations",
    "Similar",
    "Popular",
    "RankedItem",
    "Ranked",
    "Boost",
    "Promotion",
    "SessionItem",
    "Action",
    "RankedAction",
    "Decision",
    "RewardAck",
    "ErasureReceipt",
    "UserExport",
    "ModelVersion",
    "Models",
    "TrainOutcome",
    "Health",
    "JSONObject",
]

JSONObject = Dict[str, Any]
"""Any JSON object: attributes, contexts, features, model metadata."""


class _EventRequired(TypedDict):
    user: str
    item: str
    type: str


class Event(_EventRequired, total=False):
    """One event to send (schema ``Event``): ``type`` is a configured event type (``view``,
    ``click``, ``add_to_cart``, ``purchase``, ``like``, ``rating``, ``dislike``, ...)."""

    event_id: str
    """The idempotency key; :meth:`Client.send_events` fills in a random one when absent."""
    value: float
    timestamp: str
    """RFC 3339 with a time zone; default: when the server receives it."""
    context: JSONObject


class EventsAccepted(TypedDict, total=False):
    """The answer to sending events: how many, and the id of each, in order."""

    received: int
    event_ids: List[str]


class StoredEvent(TypedDict, total=False):
    """An event as stored (schema ``StoredEvent``)."""

    event_id: str
    user: str
    item: str
    type: str
    value: Optional[float]
    timestamp: str
    context: JSONObject


class EventPage(TypedDict, total=False):
    """One page of a user's events, newest first; ``next_cursor`` fetches the next."""

    events: List[StoredEvent]
    next_cursor: Optional[str]


class Consent(TypedDict, total=False):
    """A user's consent flags; a flag not given keeps its value."""

    personalization: bool
    training: bool
    marketing: bool


class UserIn(TypedDict, total=False):
    """What :meth:`Client.put_user` sends (schema ``UserIn``)."""

    attributes: JSONObject
    consent: Consent


class User(TypedDict, total=False):
    """A stored user (schema ``User``)."""

    key: str
    attributes: JSONObject
    consent: Consent
    created_at: str
    updated_at: str


class ItemIn(TypedDict, total=False):
    """What :meth:`Client.put_item` sends (schema ``ItemIn``)."""

    categories: List[str]
    text: Dict[str, str]
    numeric: Dict[str, float]
    attributes: JSONObject
    embeddings: Dict[str, List[float]]
    available: bool


class Item(ItemIn, total=False):
    """A stored item (schema ``Item``)."""

    key: str
    created_at: str
    updated_at: str


class Deleted(TypedDict, total=False):
    """The answer to deleting an item (schema ``Deleted``)."""

    key: str
    deleted: bool
    events_deleted: int


Reason = TypedDict(
    "Reason",
    {
        "kind": str,
        "message": str,
        "item": str,
        "weight": float,
        "feature": str,
        "category": str,
        "count": int,
        "rule": str,
        "effect": str,
        "similarity": float,
        "stage": str,
        "from": int,
        "to": int,
    },
    total=False,
)
"""Why a result is where it is (schema ``Reason``): always ``kind`` and ``message``; the other
fields depend on the kind (``als``, ``knn``, ``content``, ``popular``, ``rule``, ...)."""


class Contribution(TypedDict, total=False):
    """One term of a score (``explain="full"``); a result's terms sum to its score."""

    term: str
    value: float
    item: str
    feature: str
    factor: int


class Recommendation(TypedDict, total=False):
    """One result: the item, its score (higher is better) and the reasons it was chosen."""

    item: str
    score: float
    reasons: List[Reason]
    contributions: List[Contribution]


class Recommendations(TypedDict, total=False):
    """Recommendations for a user or a session (schema ``Recommendations``), best first."""

    user: str
    personalized: bool
    model: str
    model_version: int
    items: List[Recommendation]
    rules: List[str]
    filtered: List[JSONObject]
    experiments: List[JSONObject]


class Similar(TypedDict, total=False):
    """Items related to one item (schema ``Similar``), best first."""

    item: str
    items: List[Recommendation]
    rules: List[str]
    filtered: List[JSONObject]


class Popular(TypedDict, total=False):
    """Popular or trending items (schema ``Popular``), best first."""

    items: List[Recommendation]
    rules: List[str]
    filtered: List[JSONObject]


class RankedItem(TypedDict, total=False):
    """One supplied candidate, ranked: ``score`` is ``None`` and ``unknown`` true when nothing
    can score it."""

    item: str
    score: Optional[float]
    unknown: bool
    reasons: List[Reason]
    contributions: List[Contribution]


class Ranked(TypedDict, total=False):
    """Every supplied candidate, best first (schema ``Ranked``)."""

    user: str
    personalized: bool
    model: str
    model_version: int
    items: List[RankedItem]
    rules: List[str]
    filtered: List[JSONObject]


Boost = TypedDict("Boost", {"if": str, "by": float, "add": float}, total=False)
"""A boost: where the rule expression ``if`` holds, multiply the score ``by`` or ``add`` to it."""

Promotion = TypedDict("Promotion", {"slot": int, "if": str}, total=False)
"""A promotion: position ``slot`` (1 = first) holds the best-ranked item ``if`` matches."""


class _WeightedItem(TypedDict, total=False):
    item: str
    weight: float


SessionItem = Union[str, _WeightedItem]
"""A session's item: its key, or ``{"item": key, "weight": w}``."""


class Action(TypedDict, total=False):
    """An action a decision loop may choose, with its features."""

    id: str
    features: JSONObject


class RankedAction(TypedDict, total=False):
    """An action in a decision's ranking, with the probability it was chosen."""

    action: str
    probability: float
    score: float


class Decision(TypedDict, total=False):
    """A decision (schema ``Decision``): ``ranking[0]`` is the action to show."""

    decision_id: str
    loop: str
    ranking: List[RankedAction]
    slots: int
    activated: bool
    reward_deadline: str
    explanation: JSONObject


class RewardAck(TypedDict, total=False):
    """The answer to a reward (schema ``RewardAck``)."""

    decision_id: str
    action: str
    slot: int
    value: float
    learned: bool


class ErasureReceipt(TypedDict, total=False):
    """The receipt of a user's erasure (schema ``ErasureReceipt``); ``status`` becomes
    ``complete`` once a model trained without the user is active."""

    erasure_id: str
    key: str
    status: str
    user_ref: str
    requested_at: str
    requested_at_ms: int
    requested_by: str
    retrain_requested: bool
    removed: JSONObject
    models_containing_user: List[int]
    model_rows_scrubbed: List[int]
    model_versions_deleted: List[int]
    first_model_without_user: Optional[JSONObject]


class UserExport(TypedDict, total=False):
    """Everything held about a user (schema ``UserExport``)."""

    format: str
    exported_at: str
    user: User
    events: List[StoredEvent]
    derived: JSONObject


class ModelVersion(TypedDict, total=False):
    """One stored model version; ``meta`` holds hyperparameters and held-out metrics."""

    version: int
    active: bool
    bytes: int
    meta: JSONObject


class Models(TypedDict, total=False):
    """The stored model versions, the active one and the trainer's status (schema ``Models``)."""

    active: Optional[int]
    models: List[ModelVersion]
    training: JSONObject
    cluster: JSONObject


class TrainOutcome(TypedDict, total=False):
    """The model version a training produced (schema ``TrainOutcome``)."""

    version: int
    activated: bool
    meta: JSONObject


class Health(TypedDict, total=False):
    """``{"status": "ok"}``."""

    status: str
