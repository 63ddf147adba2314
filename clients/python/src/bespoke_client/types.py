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
    "Started",
    "Health",
    "ImpressionList",
    "ImpressionsStored",
    "HiddenItem",
    "Hidden",
    "HiddenChange",
    "WhyNot",
    "RuleIn",
    "Rule",
    "Rules",
    "NameDeleted",
    "LoopConfig",
    "Loop",
    "Loops",
    "Activation",
    "Evaluation",
    "SegmentIn",
    "Segment",
    "Segments",
    "SegmentRefresh",
    "SegmentMember",
    "SegmentMembers",
    "SegmentSizes",
    "UserSegments",
    "AudienceUser",
    "Audience",
    "Variant",
    "Metric",
    "Experiment",
    "Experiments",
    "ExperimentReport",
    "FairnessReport",
    "ActiveModel",
    "ApiKey",
    "ApiKeys",
    "AuditEntry",
    "AuditPage",
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


class EventsDeleted(TypedDict):
    """The answer of :meth:`Client.delete_user_events`: how many events were deleted."""

    user: str
    item: str
    deleted: int


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
    """What :meth:`Client.put_item` sends (schema ``Item``, without the times)."""

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


class Started(TypedDict, total=False):
    """The answer to a training or tuning not waited for: it runs in the background."""

    status: str
    budget: int


class Health(TypedDict, total=False):
    """``{"status": "ok"}``."""

    status: str


class _ImpressionListRequired(TypedDict):
    user: str
    items: List[str]


class ImpressionList(_ImpressionListRequired, total=False):
    """One list a user was shown, in display order (schema of ``POST /v1/impressions``)."""

    list_id: str
    """The list's idempotency key: its items are stored as events ``list_id#position``."""
    timestamp: str
    experiments: List[JSONObject]
    """The ``experiments`` entry of the ranking answer that served the list, echoed."""


class ImpressionsStored(TypedDict, total=False):
    """How many lists and impressions were stored."""

    lists: int
    stored: int


class HiddenItem(TypedDict, total=False):
    """An item a user hid: since when, and ``by`` a ``block`` or a hiding event type."""

    item: str
    since: str
    by: str


class Hidden(TypedDict, total=False):
    """The items a user hid, newest first."""

    user: str
    items: List[HiddenItem]


class HiddenChange(TypedDict, total=False):
    """The answer to hiding or showing an item again: whether it is hidden now."""

    user: str
    item: str
    hidden: bool


class WhyNot(TypedDict, total=False):
    """Where an item ranks for a user and which stage removed or demoted it (schema
    ``WhyNot``); ``position`` is ``None`` when it is not in the list."""

    user: str
    item: str
    n: int
    position: Optional[int]
    verdict: str
    score: Optional[float]
    model: str
    model_rank: Optional[int]
    rank_after_rules: Optional[int]
    reasons: List[Reason]
    contributions: List[Contribution]
    stages: List[JSONObject]


class RuleIn(TypedDict, total=False):
    """A saved business rule (schema ``RuleIn``): applied by default on its ``routes``
    (``recommendations``, ``session``, ``similar``, ``popular``, ``rank``; all when absent)."""

    filter: str
    boost: List[Boost]
    promote: List[Promotion]
    max_per_category: int
    routes: List[str]
    enabled: bool
    description: str


class Rule(RuleIn, total=False):
    """A stored rule (schema ``Rule``)."""

    name: str


class Rules(TypedDict, total=False):
    """Every saved rule, by name."""

    rules: List[Rule]


class NameDeleted(TypedDict, total=False):
    """The answer to deleting a rule, segment or experiment: its name."""

    deleted: str


class LoopConfig(TypedDict, total=False):
    """A decision loop's configuration (schema ``LoopConfig``); ``learner`` holds ``bits``,
    ``learning_rate``, ``interactions`` and ``exploration`` (``{"policy": "square_cb"}``,
    ``{"policy": "epsilon_greedy", "epsilon": 0.1}``, ...)."""

    learner: JSONObject
    mode: str
    reward_wait_seconds: float
    default_reward: float
    reward_range: List[float]
    max_actions: int
    explanation_terms: int


class Loop(TypedDict, total=False):
    """A decision loop (schema ``Loop``): configuration, learner state and log counts
    (``stats``: decisions, rewards, default_rewards, mean_reward, apprentice)."""

    name: str
    config: LoopConfig
    model_updates: int
    learned_through: int
    stats: JSONObject


class Loops(TypedDict, total=False):
    """Every decision loop (schema ``LoopList``)."""

    loops: List[Loop]


class Activation(TypedDict, total=False):
    """The answer to activating a deferred decision; ``changed`` is false the second time."""

    decision_id: str
    activated: bool
    changed: bool


class Evaluation(TypedDict, total=False):
    """Off-policy evaluation of a loop's logs (schema ``Evaluation``): per policy (``online``,
    ``uniform``, ``current``, candidates such as ``learning_rate=0.5``) IPS, SNIPS and DR
    estimates with 95% intervals, the best one, and drop-one feature importance."""

    decisions: int
    observed_reward: Optional[float]
    policies: List[JSONObject]
    best: Optional[str]
    significant: bool
    feature_importance: List[JSONObject]
    reward_model_mse: Optional[float]


class SegmentIn(TypedDict, total=False):
    """A segment's definition (schema ``SegmentIn``): ``kind`` ``rule`` (users matching a
    user ``expression``) or ``learned`` (``k`` clusters)."""

    kind: str
    expression: str
    k: int
    seed: int
    refresh: str
    description: str
    export: JSONObject


class SegmentRefresh(TypedDict, total=False):
    """A refresh of a segment's members (schema ``SegmentRefresh``)."""

    kind: str
    computed_at: str
    size: int
    evaluated_users: int
    excluded: JSONObject
    elapsed_ms: int
    model_version: int
    clusters: List[JSONObject]


class Segment(SegmentIn, total=False):
    """A stored segment (schema ``Segment``); ``webhook_secret`` only in the answer to
    creating one."""

    name: str
    created_at: str
    updated_at: str
    last_refresh: SegmentRefresh
    last_export: JSONObject
    last_failure: JSONObject
    next_refresh: str
    webhook_secret: str


class Segments(TypedDict, total=False):
    """Every segment, by name."""

    segments: List[Segment]


class SegmentMember(TypedDict, total=False):
    """A segment's member (score 1 for a rule segment)."""

    user: str
    score: float
    cluster: int


class SegmentMembers(TypedDict, total=False):
    """One page of a segment's members, in user order; ``next_cursor`` fetches the next."""

    segment: str
    members: List[SegmentMember]
    next_cursor: Optional[str]


class SegmentSizes(TypedDict, total=False):
    """A segment's size after each refresh, oldest first."""

    segment: str
    sizes: List[JSONObject]


class UserSegments(TypedDict, total=False):
    """The segments a user belongs to, as of each segment's last refresh."""

    user: str
    segments: List[JSONObject]


class AudienceUser(TypedDict, total=False):
    """A user of an audience, with how drawn to the items they are and why."""

    user: str
    score: float
    reasons: List[Reason]


class Audience(TypedDict, total=False):
    """The users most likely to respond to items (schema ``Audience``), best first."""

    users: List[AudienceUser]
    items_matched: int
    scored_users: int
    model_version: int
    size: JSONObject
    excluded: JSONObject


class _VariantRequired(TypedDict):
    name: str


class Variant(_VariantRequired, total=False):
    """An experiment's variant: ``config`` holds the ranking fields it sets (``model``,
    ``diversity``, ``filter``, ``boost``, ...); the first variant is the control."""

    weight: float
    config: JSONObject


class Metric(TypedDict, total=False):
    """An experiment metric: ``kind`` ``conversion``, ``count`` or ``revenue`` of an ``event``
    type, or ``ratio`` of a ``numerator`` to a ``denominator``."""

    kind: str
    name: str
    event: str
    numerator: str
    denominator: str


class Experiment(TypedDict, total=False):
    """An experiment (schema ``Experiment``): ``status`` is ``draft``, ``running`` or
    ``stopped``."""

    name: str
    status: str
    route: str
    variants: List[Variant]
    holdout: float
    metrics: List[Metric]
    alpha: float
    mde: float
    pre_period: str
    layer: str
    salt: str
    description: str
    started_at: str
    stopped_at: str


class Experiments(TypedDict, total=False):
    """Every experiment, by name."""

    experiments: List[Experiment]


class ExperimentReport(TypedDict, total=False):
    """An experiment's results (schema ``ExperimentReport``): users and metric means per
    variant; per treatment and metric the effect, interval, p-values (Holm, sequential) and
    CUPED's variance reduction; the sample-ratio-mismatch check."""

    experiment: str
    status: str
    users: int
    alpha: float
    srm: Optional[JSONObject]
    variants: List[JSONObject]
    comparisons: List[JSONObject]
    notes: List[str]


class FairnessReport(TypedDict, total=False):
    """The fairness and bias report on the served model (schema ``FairnessReport``)."""

    model_version: Optional[int]
    users: int
    k: int
    catalog_items: int
    coverage: Optional[float]
    gini: Optional[float]
    long_tail: JSONObject
    popularity_lift: JSONObject
    miscalibration: JSONObject
    accuracy: Optional[JSONObject]
    exposure: List[JSONObject]
    notes: List[str]


class ActiveModel(TypedDict, total=False):
    """The model version served now."""

    active: int


class ApiKey(TypedDict, total=False):
    """An API key (schema ``Key``): ``key`` itself only in the answer to creating it."""

    key: str
    name: str
    prefix: str
    scopes: List[str]
    rate_per_second: Optional[float]
    created_at: str
    revoked_at: Optional[str]


class ApiKeys(TypedDict, total=False):
    """Every API key, by prefix, without the keys."""

    keys: List[ApiKey]


class AuditEntry(TypedDict, total=False):
    """One audited change: ``action`` (``rule.put``, ``key.revoke``, ``user.erase``, ...),
    who did it (``actor``: a key prefix, ``cli``), on what, and its ``detail``."""

    seq: int
    at: str
    action: str
    actor: str
    target: Optional[str]
    detail: Any


class AuditPage(TypedDict, total=False):
    """One page of the audit log, newest first; ``next_cursor`` fetches the next."""

    entries: List[AuditEntry]
    next_cursor: Optional[str]
