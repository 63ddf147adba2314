"""The sync :class:`Client` and the async :class:`AsyncClient`.

Both take the same arguments and have the same methods, with the same names and parameters;
the async ones are coroutines. Both build their requests with :mod:`bespoke_client._core`, so
what one sends the other sends too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union, cast

import httpx

from . import _core
from ._core import DEFAULT_TIMEOUT, MAX_BATCH_EVENTS, TRAIN_TIMEOUT, Call, Timeout, _Unset
from .errors import BespokeError
from .types import (
    Action,
    ActiveModel,
    Activation,
    ApiKey,
    ApiKeys,
    AuditPage,
    Audience,
    Boost,
    Consent,
    Decision,
    Deleted,
    ErasureReceipt,
    Evaluation,
    Event,
    EventPage,
    EventsDeleted,
    EventsAccepted,
    Experiment,
    ExperimentReport,
    Experiments,
    FairnessReport,
    Health,
    Hidden,
    HiddenChange,
    ImpressionList,
    ImpressionsStored,
    Item,
    JSONObject,
    Loop,
    Loops,
    Metric,
    Models,
    NameDeleted,
    Popular,
    Promotion,
    Ranked,
    Recommendations,
    RewardAck,
    Rule,
    Rules,
    Segment,
    SegmentMembers,
    SegmentRefresh,
    Segments,
    SegmentSizes,
    SessionItem,
    Similar,
    Started,
    TrainOutcome,
    User,
    UserExport,
    UserSegments,
    Variant,
    WhyNot,
)

__all__ = ["Client", "AsyncClient"]

StrList = Union[str, Sequence[str]]
"""One string, or several (sent as repeated parameters)."""


def _ranking(
    categories: Optional[StrList],
    exclude: Optional[StrList],
    explain: Optional[str],
    diversity: Optional[float],
    filter: Optional[str],
    boost: Optional[Sequence[Boost]],
    promote: Optional[Sequence[Promotion]],
    max_per_category: Optional[int],
    skip_rules: Optional[StrList],
) -> Dict[str, Any]:
    """The query parameters every ranking route takes."""
    return {
        "category": _strs(categories),
        "exclude": _strs(exclude),
        "explain": explain,
        "diversity": diversity,
        "filter": filter,
        "boost": list(boost) if boost is not None else None,
        "promote": list(promote) if promote is not None else None,
        "max_per_category": max_per_category,
        "skip_rules": _strs(skip_rules),
    }


def _rerank(
    max_impressions: Optional[int],
    impression_window: Optional[str],
    no_repeat_lists: Optional[int],
    hide_similar: Optional[float],
    calibration: Optional[float],
    popularity: Optional[float],
    popularity_method: Optional[str],
    protected: Optional[str],
    protected_share: Optional[float],
    protected_alpha: Optional[float],
) -> Dict[str, Any]:
    """The no-repeat, hiding and fairness parameters every ranking route takes."""
    return {
        "max_impressions": max_impressions,
        "impression_window": impression_window,
        "no_repeat_lists": no_repeat_lists,
        "hide_similar": hide_similar,
        "calibration": calibration,
        "popularity": popularity,
        "popularity_method": popularity_method,
        "protected": protected,
        "protected_share": protected_share,
        "protected_alpha": protected_alpha,
    }


def _strs(value: Optional[StrList]) -> Optional[List[str]]:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _actions(actions: Sequence[Union[str, Action]]) -> List[Action]:
    return [{"id": a} if isinstance(a, str) else a for a in actions]


def _merge(answers: List[EventsAccepted]) -> EventsAccepted:
    ids: List[str] = []
    for answer in answers:
        ids.extend(answer.get("event_ids", []))
    return {"received": sum(a.get("received", 0) for a in answers), "event_ids": ids}


class _Base:
    """What both clients hold: where the server is, the key, timeouts and retries."""

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str],
        timeout: Timeout,
        max_retries: int,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self._headers = _core.auth_headers(api_key)
        self._timeout = timeout

    def _request_args(self, c: Call) -> Dict[str, Any]:
        args: Dict[str, Any] = {"params": c.params or None}
        if c.body is not None:
            args["json"] = c.body
        if not isinstance(c.timeout, _Unset):
            args["timeout"] = c.timeout
        return args


class Client(_Base):
    """A client for a Bespoke server.

    >>> client = Client("http://127.0.0.1:8080", api_key="bsk_...")
    >>> client.recommend("user-00042", n=5)["items"][0]["reasons"][0]["message"]
    'because you interacted with sku-02152'

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        api_key: an API key (``bsk_...``) sent as a bearer token; read routes need the
            ``read`` scope, writes ``write``, training, listing models and exports ``admin``.
        timeout: seconds a request may take (default 30), an :class:`httpx.Timeout` or
            ``None``; :meth:`train` waits up to 10 minutes unless told otherwise.
        max_retries: how many times to resend a request after a 429, and (where sending twice
            is harmless) after a 503 or no answer, waiting ``Retry-After`` (default 2; 0 never
            retries).
        http_client: an :class:`httpx.Client` of your own (proxies, TLS, transports); the
            client then neither configures nor closes it.

    Use it as a context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections (unless the :class:`httpx.Client` was given)."""
        if self._owns_http:
            self._http.close()

    def _send(self, c: Call) -> Any:
        attempt = 0
        while True:
            try:
                try:
                    response = self._http.request(
                        c.method,
                        self.base_url + c.path,
                        headers=self._headers,
                        **self._request_args(c),
                    )
                except httpx.TransportError as e:
                    raise _core.transport_error(e, c.method, c.path) from e
                return _core.decode(response)
            except BespokeError as error:
                wait = _core.retry_delay(c, error, attempt, self.max_retries)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    # Operations ----------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /healthz``: ``{"status": "ok"}`` when the server is up (no key needed)."""
        return cast(Health, self._send(_core.call("healthz")))

    def openapi(self) -> JSONObject:
        """``GET /openapi.json``: the server's OpenAPI 3.1 document."""
        return cast(JSONObject, self._send(_core.call("openapi")))

    def send_events(
        self, events: Iterable[Event], *, batch_size: int = MAX_BATCH_EVENTS
    ) -> EventsAccepted:
        """``POST /v1/events``: stores events, in batches of ``batch_size``.

        Each event without an ``event_id`` gets a random one before anything is sent, so a
        retry, or sending the same events again, stores nothing twice (the server answers a
        replay with the same ids). Each batch is atomic; an error in a later batch leaves the
        earlier ones stored, and sending everything again is safe. The answer's
        ``event_ids`` are in the order of ``events``.
        """
        prepared = _core.prepare_events(events)
        answers = [
            cast(EventsAccepted, self._send(_core.call("postEvents", body={"events": batch})))
            for batch in _core.batches(prepared, batch_size)
        ]
        return _merge(answers)

    def user_events(
        self, user: str, *, limit: Optional[int] = None, cursor: Optional[str] = None
    ) -> EventPage:
        """``GET /v1/users/{user}/events``: a page of the user's events, newest first; pass
        the answer's ``next_cursor`` as ``cursor`` for the next page."""
        return cast(
            EventPage,
            self._send(
                _core.call(
                    "getUserEvents", {"key": user}, query={"limit": limit, "cursor": cursor}
                )
            ),
        )

    def delete_user_events(
        self, user: str, item: str, *, type: Optional[str] = None
    ) -> EventsDeleted:
        """``DELETE /v1/users/{user}/events?item=``: deletes the user's events on ``item`` (of
        ``type`` only, else every type but impressions) from the store and from serving; the
        answer counts them (0 when there were none)."""
        return cast(
            EventsDeleted,
            self._send(
                _core.call(
                    "deleteUserEvents", {"key": user}, query={"item": item, "type": type}
                )
            ),
        )

    def put_user(
        self,
        user: str,
        *,
        attributes: Optional[JSONObject] = None,
        consent: Optional[Consent] = None,
    ) -> User:
        """``PUT /v1/users/{user}``: creates or replaces a user's attributes (as a whole) and
        sets the consent flags given (the others keep their value)."""
        body = {"attributes": attributes, "consent": consent}
        return cast(User, self._send(_core.call("putUser", {"key": user}, body=body)))

    def get_user(self, user: str) -> User:
        """``GET /v1/users/{user}``; :class:`~bespoke_client.NotFoundError` if unknown."""
        return cast(User, self._send(_core.call("getUser", {"key": user})))

    def delete_user(self, user: str, *, retrain: Optional[bool] = None) -> ErasureReceipt:
        """``DELETE /v1/users/{user}``: erases the user (profile, events, everything derived,
        their rows in stored models) and returns the receipt; ``retrain=True`` also trains a
        model without them at once."""
        c = _core.call("deleteUser", {"key": user}, query={"retrain": retrain})
        return cast(ErasureReceipt, self._send(c))

    def get_erasure(self, erasure_id: str) -> ErasureReceipt:
        """``GET /v1/erasures/{erasure_id}``: an erasure's receipt, as it stands now."""
        return cast(ErasureReceipt, self._send(_core.call("getErasure", {"key": erasure_id})))

    def export_user(self, user: str) -> UserExport:
        """``GET /v1/users/{user}/export`` (admin): everything held about the user."""
        return cast(UserExport, self._send(_core.call("exportUser", {"key": user})))

    def put_item(
        self,
        item: str,
        *,
        categories: Optional[Sequence[str]] = None,
        text: Optional[Mapping[str, str]] = None,
        numeric: Optional[Mapping[str, float]] = None,
        attributes: Optional[JSONObject] = None,
        embeddings: Optional[Mapping[str, Sequence[float]]] = None,
        available: Optional[bool] = None,
    ) -> Item:
        """``PUT /v1/items/{item}``: creates or replaces an item and its content."""
        body = {
            "categories": _strs(categories),
            "text": dict(text) if text is not None else None,
            "numeric": dict(numeric) if numeric is not None else None,
            "attributes": attributes,
            "embeddings": {k: list(v) for k, v in embeddings.items()} if embeddings else None,
            "available": available,
        }
        return cast(Item, self._send(_core.call("putItem", {"key": item}, body=body)))

    def get_item(self, item: str) -> Item:
        """``GET /v1/items/{item}``; :class:`~bespoke_client.NotFoundError` if unknown."""
        return cast(Item, self._send(_core.call("getItem", {"key": item})))

    def delete_item(self, item: str) -> Deleted:
        """``DELETE /v1/items/{item}``: the item and every event on it."""
        return cast(Deleted, self._send(_core.call("deleteItem", {"key": item})))

    def recommend(
        self,
        user: str,
        n: Optional[int] = None,
        *,
        model: Optional[str] = None,
        include_seen: Optional[bool] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Recommendations:
        """``GET /v1/users/{user}/recommendations``: the user's top ``n``, best first, each
        with its reasons.

        Args:
            model: ``auto`` (default), ``als``, ``knn``, ``ease``, ``bpr`` or ``popular``.
            include_seen: also return items the user interacted with.
            categories: only items in any of these categories.
            exclude: item keys never to return.
            explain: ``"full"`` adds each result's score ``contributions``.
            diversity: the diversity re-ranker's λ, 0 to 1.
            filter: a rule expression results must match, e.g. ``"stock > 0 and price < 50"``.
            boost: e.g. ``[{"if": 'tags contains "organic"', "by": 1.5}]``.
            promote: e.g. ``[{"slot": 3, "if": 'campaign = "winter"'}]``.
            max_per_category: at most this many results per category.
            skip_rules: saved rules not to apply (``"*"`` for all).
            max_impressions: drop items shown to the user (:meth:`record_impressions`) this
                many times within ``impression_window`` (``"24h"``, ``"7d"``) without an
                interaction; ``no_repeat_lists``: drop what was in their last lists.
            hide_similar: 0 to 1, how far items resembling one the user hid move down.
            calibration: the calibration re-ranker's λ, 0 to 1 (categories follow the
                user's history).
            popularity: popularity debiasing's weight, 0 to 1, by ``popularity_method``
                ``"xquad"`` or ``"inverse"``.
            protected: an item expression naming a protected group that every prefix of the
                list holds a ``protected_share`` of (FA*IR, significance ``protected_alpha``).

        The server's configured defaults apply to every argument not given.
        """
        query = {"n": n, "model": model, "include_seen": include_seen}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        c = _core.call("getRecommendations", {"key": user}, query=query)
        return cast(Recommendations, self._send(c))

    def recommend_session(
        self,
        items: Sequence[SessionItem] = (),
        n: Optional[int] = None,
        *,
        context: Optional[JSONObject] = None,
        user: Optional[str] = None,
        model: Optional[str] = None,
        include_seen: Optional[bool] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Recommendations:
        """``POST /v1/recommendations``: recommendations for a visitor without a user key,
        from the items of their session (oldest first; a key or ``{"item", "weight"}``) or,
        with none, from the request's ``context``. The other arguments are
        :meth:`recommend`'s; ``user`` names whose hidden items and impressions apply."""
        body: Dict[str, Any] = {
            "items": list(items) if items else None,
            "n": n,
            "context": context,
            "user": user,
            "model": model,
            "include_seen": include_seen,
        }
        body.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        body.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        body["categories"] = body.pop("category")
        return cast(Recommendations, self._send(_core.call("recommendSession", body=body)))

    def similar(
        self,
        item: str,
        n: Optional[int] = None,
        *,
        model: Optional[str] = None,
        user: Optional[str] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Similar:
        """``GET /v1/items/{item}/similar``: related items, best first; ``model`` is ``knn``
        (default), ``als`` or ``cooccurrence``. The other arguments are :meth:`recommend`'s."""
        query = {"n": n, "model": model, "user": user}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        return cast(Similar, self._send(_core.call("getSimilar", {"key": item}, query=query)))

    def popular(
        self,
        n: Optional[int] = None,
        *,
        window: Optional[str] = None,
        sort: Optional[str] = None,
        user: Optional[str] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Popular:
        """``GET /v1/popular``: popular items (``window="7d"`` counts the last 7 days;
        ``sort="trending"`` decays with time). The other arguments are :meth:`recommend`'s."""
        query = {"n": n, "window": window, "sort": sort, "user": user}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        return cast(Popular, self._send(_core.call("getPopular", query=query)))

    def rank(
        self,
        user: str,
        items: Sequence[str],
        *,
        history: Optional[Sequence[SessionItem]] = None,
        context: Optional[JSONObject] = None,
        model: Optional[str] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Ranked:
        """``POST /v1/users/{user}/rank``: ranks supplied candidates (up to 1,000, each once)
        for the user, best first. Items nothing can score come last with ``"unknown": True``
        and a ``None`` score. ``history`` ranks for a visitor the server does not know."""
        body: Dict[str, Any] = {
            "items": list(items),
            "history": list(history) if history is not None else None,
            "context": context,
            "model": model,
            "explain": explain,
            "diversity": diversity,
            "filter": filter,
            "boost": list(boost) if boost is not None else None,
            "promote": list(promote) if promote is not None else None,
            "max_per_category": max_per_category,
            "skip_rules": _strs(skip_rules),
        }
        body.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        return cast(Ranked, self._send(_core.call("rankItems", {"key": user}, body=body)))

    def decide(
        self,
        loop: str,
        actions: Sequence[Union[str, Action]],
        *,
        context: Optional[JSONObject] = None,
        user: Optional[str] = None,
        slots: Optional[int] = None,
        baseline: Optional[str] = None,
        exclude: Optional[Sequence[str]] = None,
        decision_id: Optional[str] = None,
        defer_activation: Optional[bool] = None,
    ) -> Decision:
        """``POST /v1/loops/{loop}/decisions``: chooses among ``actions`` (ids, or
        ``{"id", "features"}``) under ``context``; ``ranking[0]["action"]`` is the choice.
        Send the outcome with :meth:`reward` and the answer's ``decision_id``."""
        body = {
            "actions": _actions(actions),
            "context": context,
            "user": user,
            "slots": slots,
            "baseline": baseline,
            "exclude": _strs(exclude),
            "decision_id": decision_id,
            "defer_activation": defer_activation,
        }
        return cast(Decision, self._send(_core.call("decide", {"key": loop}, body=body)))

    def reward(self, decision_id: str, value: float, *, slot: Optional[int] = None) -> RewardAck:
        """``POST /v1/decisions/{decision_id}/reward``: the reward of a decision (of one
        ``slot`` of a multi-slot one); the loop learns from it at once."""
        c = _core.call("rewardDecision", {"key": decision_id}, body={"value": value, "slot": slot})
        return cast(RewardAck, self._send(c))

    def train(
        self, *, wait: bool = True, timeout: Timeout = TRAIN_TIMEOUT
    ) -> Union[TrainOutcome, Started]:
        """``POST /v1/models/train`` (admin): trains and activates a new model version.

        With ``wait`` (the default) it returns when the version is trained, within
        ``timeout`` seconds; without, the training runs in the background and this returns
        ``{"status": "started"}`` at once. A training already running is a
        :class:`~bespoke_client.ConflictError`.
        """
        c = _core.call("trainModels", query={"wait": wait}, timeout=timeout)
        return cast(Union[TrainOutcome, Started], self._send(c))

    def models(self) -> Models:
        """``GET /v1/models`` (admin): stored versions, the active one, held-out metrics and
        the trainer's status."""
        return cast(Models, self._send(_core.call("listModels")))

    # What users were shown, what they hid, why an item is not shown -------------------------

    def record_impressions(self, impressions: Sequence[ImpressionList]) -> ImpressionsStored:
        """``POST /v1/impressions``: the lists users were shown, so that no-repeat rules
        (``max_impressions``, ``no_repeat_lists``) and experiments see them. Each list is
        stored as ``impression`` events; a ``list_id`` makes their ids ``list_id#position``.
        Not retried: a resend without ``list_id`` would count the list twice."""
        c = _core.call("postImpressions", body={"impressions": list(impressions)})
        return cast(ImpressionsStored, self._send(c))

    def hidden(self, user: str) -> Hidden:
        """``GET /v1/users/{user}/hidden``: the items the user hid (blocks and hiding events
        such as ``not_interested``), newest first; no ranking route returns them."""
        return cast(Hidden, self._send(_core.call("getHidden", {"key": user})))

    def hide(self, user: str, item: str) -> HiddenChange:
        """``PUT /v1/users/{user}/hidden/{item}``: hides the item from the user on every
        ranking route."""
        c = _core.call("hideItem", {"key": user, "item": item})
        return cast(HiddenChange, self._send(c))

    def unhide(self, user: str, item: str) -> HiddenChange:
        """``DELETE /v1/users/{user}/hidden/{item}``: shows the item again (undoes a block or
        a hiding event); harmless when it was not hidden."""
        c = _core.call("unhideItem", {"key": user, "item": item})
        return cast(HiddenChange, self._send(c))

    def why_not(
        self,
        user: str,
        item: str,
        n: Optional[int] = None,
        *,
        model: Optional[str] = None,
        include_seen: Optional[bool] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> WhyNot:
        """``GET /v1/users/{user}/explain``: where ``item`` ranks in the user's top ``n``
        under the same arguments as :meth:`recommend`, and which stage (filter, rule,
        re-ranker, cut-off) removed or demoted it."""
        query = {"item": item, "n": n, "model": model, "include_seen": include_seen}
        query.update(
            _ranking(
                categories, exclude, None, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        c = _core.call("whyNot", {"key": user}, query=query)
        return cast(WhyNot, self._send(c))

    # Saved business rules (admin) ------------------------------------------------------------

    def rules(self) -> Rules:
        """``GET /v1/rules``: every saved rule, by name."""
        return cast(Rules, self._send(_core.call("listRules")))

    def get_rule(self, name: str) -> Rule:
        """``GET /v1/rules/{name}``; :class:`~bespoke_client.NotFoundError` if unknown."""
        return cast(Rule, self._send(_core.call("getRule", {"key": name})))

    def put_rule(
        self,
        name: str,
        *,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        routes: Optional[Sequence[str]] = None,
        enabled: Optional[bool] = None,
        description: Optional[str] = None,
    ) -> Rule:
        """``PUT /v1/rules/{name}``: creates or replaces a saved rule, applied to every
        request on its ``routes`` (all ranking routes when not given) unless the request
        names it in ``skip_rules``."""
        body = {
            "filter": filter,
            "boost": list(boost) if boost is not None else None,
            "promote": list(promote) if promote is not None else None,
            "max_per_category": max_per_category,
            "routes": _strs(routes),
            "enabled": enabled,
            "description": description,
        }
        return cast(Rule, self._send(_core.call("putRule", {"key": name}, body=body)))

    def delete_rule(self, name: str) -> NameDeleted:
        """``DELETE /v1/rules/{name}``: the rule no longer applies."""
        return cast(NameDeleted, self._send(_core.call("deleteRule", {"key": name})))

    # Decision loops --------------------------------------------------------------------------

    def loops(self) -> Loops:
        """``GET /v1/loops``: every decision loop with its configuration and counts."""
        return cast(Loops, self._send(_core.call("listLoops")))

    def get_loop(self, loop: str) -> Loop:
        """``GET /v1/loops/{loop}``: configuration, learner state and log counts."""
        return cast(Loop, self._send(_core.call("getLoop", {"key": loop})))

    def put_loop(
        self,
        loop: str,
        *,
        learner: Optional[JSONObject] = None,
        mode: Optional[str] = None,
        reward_wait_seconds: Optional[float] = None,
        default_reward: Optional[float] = None,
        reward_range: Optional[Sequence[float]] = None,
        max_actions: Optional[int] = None,
        explanation_terms: Optional[int] = None,
    ) -> Loop:
        """``PUT /v1/loops/{loop}`` (admin): creates or reconfigures a loop (a loop also
        starts on its first decision, with the defaults). ``learner`` holds ``bits``,
        ``learning_rate``, ``interactions`` and ``exploration``; changing the first three
        rebuilds the learner from the whole log. ``mode`` is ``online`` or ``apprentice``."""
        body = {
            "learner": learner,
            "mode": mode,
            "reward_wait_seconds": reward_wait_seconds,
            "default_reward": default_reward,
            "reward_range": list(reward_range) if reward_range is not None else None,
            "max_actions": max_actions,
            "explanation_terms": explanation_terms,
        }
        return cast(Loop, self._send(_core.call("putLoop", {"key": loop}, body=body)))

    def activate_decision(self, decision_id: str) -> Activation:
        """``POST /v1/decisions/{decision_id}/activate``: a decision made with
        ``defer_activation=True`` was shown after all; its reward counts from now on
        (activating twice is harmless)."""
        c = _core.call("activateDecision", {"key": decision_id})
        return cast(Activation, self._send(c))

    def evaluate_loop(self, loop: str, *, max_decisions: Optional[int] = None) -> Evaluation:
        """``GET /v1/loops/{loop}/evaluation`` (admin): off-policy evaluation of the loop's
        settled decisions (the latest ``max_decisions``): what the online policy, uniform
        random and candidate configurations would have earned, and feature importance."""
        c = _core.call("evaluateLoop", {"key": loop}, query={"max_decisions": max_decisions})
        return cast(Evaluation, self._send(c))

    def apply_candidate(self, loop: str, candidate: str) -> Loop:
        """``POST /v1/loops/{loop}/evaluation/apply`` (admin): reconfigures the loop as the
        evaluation's candidate ``candidate`` (a policy name such as ``learning_rate=0.5``)."""
        c = _core.call("applyCandidate", {"key": loop}, body={"candidate": candidate})
        return cast(Loop, self._send(c))

    # Segments and audiences ------------------------------------------------------------------

    def segments(self) -> Segments:
        """``GET /v1/segments``: every segment with its last refresh and export."""
        return cast(Segments, self._send(_core.call("listSegments")))

    def get_segment(self, name: str) -> Segment:
        """``GET /v1/segments/{name}``: the definition, last refresh and next one."""
        return cast(Segment, self._send(_core.call("getSegment", {"key": name})))

    def put_segment(
        self,
        name: str,
        kind: str,
        *,
        expression: Optional[str] = None,
        k: Optional[int] = None,
        seed: Optional[int] = None,
        refresh: Optional[str] = None,
        description: Optional[str] = None,
        export: Optional[JSONObject] = None,
    ) -> Segment:
        """``PUT /v1/segments/{name}`` (admin): creates or replaces a segment: ``kind="rule"``
        with a user ``expression`` (e.g. ``'plan = "pro"'``), or ``kind="learned"`` with ``k``
        clusters. Members are computed by :meth:`refresh_segment` or every ``refresh``
        (``"6h"``). The answer to creating one holds its ``webhook_secret``."""
        body = {
            "kind": kind,
            "expression": expression,
            "k": k,
            "seed": seed,
            "refresh": refresh,
            "description": description,
            "export": export,
        }
        return cast(Segment, self._send(_core.call("putSegment", {"key": name}, body=body)))

    def delete_segment(self, name: str) -> NameDeleted:
        """``DELETE /v1/segments/{name}`` (admin): the segment, its members and history."""
        return cast(NameDeleted, self._send(_core.call("deleteSegment", {"key": name})))

    def refresh_segment(self, name: str) -> SegmentRefresh:
        """``POST /v1/segments/{name}/refresh`` (admin): computes the members now."""
        c = _core.call("refreshSegment", {"key": name})
        return cast(SegmentRefresh, self._send(c))

    def segment_members(
        self,
        name: str,
        *,
        cluster: Optional[int] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SegmentMembers:
        """``GET /v1/segments/{name}/members``: a page of members as of the last refresh (of
        one ``cluster`` of a learned segment); pass ``next_cursor`` as ``cursor``."""
        query = {"cluster": cluster, "limit": limit, "cursor": cursor}
        c = _core.call("segmentMembers", {"key": name}, query=query)
        return cast(SegmentMembers, self._send(c))

    def segment_sizes(self, name: str) -> SegmentSizes:
        """``GET /v1/segments/{name}/sizes``: the size after each refresh, oldest first."""
        return cast(SegmentSizes, self._send(_core.call("segmentSizes", {"key": name})))

    def user_segments(self, user: str) -> UserSegments:
        """``GET /v1/users/{user}/segments``: the segments the user is a member of."""
        return cast(UserSegments, self._send(_core.call("userSegments", {"key": user})))

    def audience(
        self,
        *,
        items: Optional[Sequence[str]] = None,
        category: Optional[str] = None,
        filter: Optional[str] = None,
        n: Optional[int] = None,
        threshold: Optional[float] = None,
    ) -> Audience:
        """``POST /v1/audiences/query``: the ``n`` users most drawn to some items (keys, a
        category and/or an item ``filter``), best first, without those who objected to
        marketing; ``threshold`` also counts every user scoring at least that."""
        body = {
            "items": _strs(items),
            "category": category,
            "filter": filter,
            "n": n,
            "threshold": threshold,
        }
        return cast(Audience, self._send(_core.call("queryAudience", body=body)))

    # Experiments (admin) ---------------------------------------------------------------------

    def experiments(self) -> Experiments:
        """``GET /v1/experiments``: every experiment, by name."""
        return cast(Experiments, self._send(_core.call("listExperiments")))

    def get_experiment(self, name: str) -> Experiment:
        """``GET /v1/experiments/{name}``."""
        return cast(Experiment, self._send(_core.call("getExperiment", {"key": name})))

    def put_experiment(
        self,
        name: str,
        variants: Sequence[Variant],
        *,
        route: Optional[str] = None,
        holdout: Optional[float] = None,
        metrics: Optional[Sequence[Metric]] = None,
        alpha: Optional[float] = None,
        mde: Optional[float] = None,
        pre_period: Optional[str] = None,
        layer: Optional[str] = None,
        salt: Optional[str] = None,
        description: Optional[str] = None,
    ) -> Experiment:
        """``PUT /v1/experiments/{name}``: creates a draft experiment between ``variants``
        (the first is the control; each ``config`` sets ranking fields such as ``model``) on
        ``route`` (``recommendations`` by default), or replaces a draft's definition. It
        serves nothing until :meth:`start_experiment`."""
        body = {
            "variants": list(variants),
            "route": route,
            "holdout": holdout,
            "metrics": list(metrics) if metrics is not None else None,
            "alpha": alpha,
            "mde": mde,
            "pre_period": pre_period,
            "layer": layer,
            "salt": salt,
            "description": description,
        }
        c = _core.call("putExperiment", {"key": name}, body=body)
        return cast(Experiment, self._send(c))

    def start_experiment(self, name: str) -> Experiment:
        """``POST /v1/experiments/{name}/start``: its route serves the variants from now on;
        ranking answers name the variant in ``experiments``."""
        c = _core.call("startExperiment", {"key": name})
        return cast(Experiment, self._send(c))

    def stop_experiment(self, name: str) -> Experiment:
        """``POST /v1/experiments/{name}/stop``: back to the plain route; results stay."""
        c = _core.call("stopExperiment", {"key": name})
        return cast(Experiment, self._send(c))

    def experiment_report(self, name: str) -> ExperimentReport:
        """``GET /v1/experiments/{name}/report``: users and metric means per variant, each
        treatment's effects with intervals and p-values, and the sample-ratio check."""
        c = _core.call("experimentReport", {"key": name})
        return cast(ExperimentReport, self._send(c))

    def delete_experiment(self, name: str) -> NameDeleted:
        """``DELETE /v1/experiments/{name}``: the experiment and its exposures."""
        c = _core.call("deleteExperiment", {"key": name})
        return cast(NameDeleted, self._send(c))

    # Reports, models and keys (admin) --------------------------------------------------------

    def fairness_report(
        self,
        *,
        k: Optional[int] = None,
        users: Optional[int] = None,
        seed: Optional[int] = None,
        user_attributes: Optional[StrList] = None,
        item_attributes: Optional[StrList] = None,
        model: Optional[str] = None,
        categories: Optional[StrList] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> FairnessReport:
        """``GET /v1/reports/fairness``: coverage, Gini, long tail, popularity lift and
        miscalibration of the served top-``k`` lists (of a seeded sample of ``users``), with
        accuracy by user group (``user_attributes``) and exposure by item group
        (``item_attributes``); the ranking arguments measure a configuration before
        serving it."""
        query = {
            "k": k,
            "users": users,
            "seed": seed,
            "user_attribute": _strs(user_attributes),
            "item_attribute": _strs(item_attributes),
            "model": model,
        }
        query.update(
            _ranking(
                categories, None, None, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        return cast(FairnessReport, self._send(_core.call("fairnessReport", query=query)))

    def tune(
        self,
        *,
        budget: Optional[int] = None,
        wait: bool = True,
        timeout: Timeout = TRAIN_TIMEOUT,
    ) -> Union[TrainOutcome, Started]:
        """``POST /v1/models/tune``: searches model types and hyperparameters (``budget``
        configurations) on the stored data, then trains and activates the best; ``wait`` and
        ``timeout`` are :meth:`train`'s (without ``wait``: ``{"status": "started", ...}``)."""
        query = {"wait": wait, "budget": budget}
        c = _core.call("tuneModels", query=query, timeout=timeout)
        return cast(Union[TrainOutcome, Started], self._send(c))

    def activate_model(self, version: int) -> ActiveModel:
        """``POST /v1/models/{version}/activate``: serves a stored version (a rollback)."""
        c = _core.call("activateModel", {"version": str(version)})
        return cast(ActiveModel, self._send(c))

    def keys(self) -> ApiKeys:
        """``GET /v1/keys``: every API key's prefix, name, scopes and state (never the key)."""
        return cast(ApiKeys, self._send(_core.call("listKeys")))

    def create_key(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        rate_per_second: Optional[float] = None,
    ) -> ApiKey:
        """``POST /v1/keys``: a new key with ``scopes`` (``read``, ``write``, ``admin``);
        ``key`` is in this answer only. Not retried: a resend would make a second key."""
        body = {"name": name, "scopes": list(scopes), "rate_per_second": rate_per_second}
        return cast(ApiKey, self._send(_core.call("createKey", body=body)))

    def revoke_key(self, prefix: str) -> ApiKey:
        """``DELETE /v1/keys/{prefix}``: revokes a key (by its ``prefix``) at once."""
        return cast(ApiKey, self._send(_core.call("revokeKey", {"key": prefix})))

    def audit(self, *, limit: Optional[int] = None, cursor: Optional[str] = None) -> AuditPage:
        """``GET /v1/audit`` (admin): a page of the audit log (every admin change and
        erasure), newest first; pass the answer's ``next_cursor`` as ``cursor``."""
        c = _core.call("getAudit", query={"limit": limit, "cursor": cursor})
        return cast(AuditPage, self._send(c))


class AsyncClient(_Base):
    """The async twin of :class:`Client`: the same arguments and methods, as coroutines.

    >>> async with AsyncClient("http://127.0.0.1:8080", api_key="bsk_...") as client:
    ...     recs = await client.recommend("user-00042", n=5)

    ``http_client`` takes an :class:`httpx.AsyncClient`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the connections (unless the :class:`httpx.AsyncClient` was given)."""
        if self._owns_http:
            await self._http.aclose()

    async def _send(self, c: Call) -> Any:
        attempt = 0
        while True:
            try:
                try:
                    response = await self._http.request(
                        c.method,
                        self.base_url + c.path,
                        headers=self._headers,
                        **self._request_args(c),
                    )
                except httpx.TransportError as e:
                    raise _core.transport_error(e, c.method, c.path) from e
                return _core.decode(response)
            except BespokeError as error:
                wait = _core.retry_delay(c, error, attempt, self.max_retries)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    # Operations: see Client for what each does. ------------------------------------------

    async def health(self) -> Health:
        """See :meth:`Client.health`."""
        return cast(Health, await self._send(_core.call("healthz")))

    async def openapi(self) -> JSONObject:
        """See :meth:`Client.openapi`."""
        return cast(JSONObject, await self._send(_core.call("openapi")))

    async def send_events(
        self, events: Iterable[Event], *, batch_size: int = MAX_BATCH_EVENTS
    ) -> EventsAccepted:
        """See :meth:`Client.send_events`; batches are sent one after another, in order."""
        prepared = _core.prepare_events(events)
        answers: List[EventsAccepted] = []
        for batch in _core.batches(prepared, batch_size):
            c = _core.call("postEvents", body={"events": batch})
            answers.append(cast(EventsAccepted, await self._send(c)))
        return _merge(answers)

    async def user_events(
        self, user: str, *, limit: Optional[int] = None, cursor: Optional[str] = None
    ) -> EventPage:
        """See :meth:`Client.user_events`."""
        c = _core.call("getUserEvents", {"key": user}, query={"limit": limit, "cursor": cursor})
        return cast(EventPage, await self._send(c))

    async def delete_user_events(
        self, user: str, item: str, *, type: Optional[str] = None
    ) -> EventsDeleted:
        """See :meth:`Client.delete_user_events`."""
        c = _core.call("deleteUserEvents", {"key": user}, query={"item": item, "type": type})
        return cast(EventsDeleted, await self._send(c))

    async def put_user(
        self,
        user: str,
        *,
        attributes: Optional[JSONObject] = None,
        consent: Optional[Consent] = None,
    ) -> User:
        """See :meth:`Client.put_user`."""
        body = {"attributes": attributes, "consent": consent}
        return cast(User, await self._send(_core.call("putUser", {"key": user}, body=body)))

    async def get_user(self, user: str) -> User:
        """See :meth:`Client.get_user`."""
        return cast(User, await self._send(_core.call("getUser", {"key": user})))

    async def delete_user(self, user: str, *, retrain: Optional[bool] = None) -> ErasureReceipt:
        """See :meth:`Client.delete_user`."""
        c = _core.call("deleteUser", {"key": user}, query={"retrain": retrain})
        return cast(ErasureReceipt, await self._send(c))

    async def get_erasure(self, erasure_id: str) -> ErasureReceipt:
        """See :meth:`Client.get_erasure`."""
        c = _core.call("getErasure", {"key": erasure_id})
        return cast(ErasureReceipt, await self._send(c))

    async def export_user(self, user: str) -> UserExport:
        """See :meth:`Client.export_user`."""
        return cast(UserExport, await self._send(_core.call("exportUser", {"key": user})))

    async def put_item(
        self,
        item: str,
        *,
        categories: Optional[Sequence[str]] = None,
        text: Optional[Mapping[str, str]] = None,
        numeric: Optional[Mapping[str, float]] = None,
        attributes: Optional[JSONObject] = None,
        embeddings: Optional[Mapping[str, Sequence[float]]] = None,
        available: Optional[bool] = None,
    ) -> Item:
        """See :meth:`Client.put_item`."""
        body = {
            "categories": _strs(categories),
            "text": dict(text) if text is not None else None,
            "numeric": dict(numeric) if numeric is not None else None,
            "attributes": attributes,
            "embeddings": {k: list(v) for k, v in embeddings.items()} if embeddings else None,
            "available": available,
        }
        return cast(Item, await self._send(_core.call("putItem", {"key": item}, body=body)))

    async def get_item(self, item: str) -> Item:
        """See :meth:`Client.get_item`."""
        return cast(Item, await self._send(_core.call("getItem", {"key": item})))

    async def delete_item(self, item: str) -> Deleted:
        """See :meth:`Client.delete_item`."""
        return cast(Deleted, await self._send(_core.call("deleteItem", {"key": item})))

    async def recommend(
        self,
        user: str,
        n: Optional[int] = None,
        *,
        model: Optional[str] = None,
        include_seen: Optional[bool] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Recommendations:
        """See :meth:`Client.recommend`."""
        query = {"n": n, "model": model, "include_seen": include_seen}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        c = _core.call("getRecommendations", {"key": user}, query=query)
        return cast(Recommendations, await self._send(c))

    async def recommend_session(
        self,
        items: Sequence[SessionItem] = (),
        n: Optional[int] = None,
        *,
        context: Optional[JSONObject] = None,
        user: Optional[str] = None,
        model: Optional[str] = None,
        include_seen: Optional[bool] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Recommendations:
        """See :meth:`Client.recommend_session`."""
        body: Dict[str, Any] = {
            "items": list(items) if items else None,
            "n": n,
            "context": context,
            "user": user,
            "model": model,
            "include_seen": include_seen,
        }
        body.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        body.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        body["categories"] = body.pop("category")
        c = _core.call("recommendSession", body=body)
        return cast(Recommendations, await self._send(c))

    async def similar(
        self,
        item: str,
        n: Optional[int] = None,
        *,
        model: Optional[str] = None,
        user: Optional[str] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Similar:
        """See :meth:`Client.similar`."""
        query = {"n": n, "model": model, "user": user}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        c = _core.call("getSimilar", {"key": item}, query=query)
        return cast(Similar, await self._send(c))

    async def popular(
        self,
        n: Optional[int] = None,
        *,
        window: Optional[str] = None,
        sort: Optional[str] = None,
        user: Optional[str] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Popular:
        """See :meth:`Client.popular`."""
        query = {"n": n, "window": window, "sort": sort, "user": user}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        return cast(Popular, await self._send(_core.call("getPopular", query=query)))

    async def rank(
        self,
        user: str,
        items: Sequence[str],
        *,
        history: Optional[Sequence[SessionItem]] = None,
        context: Optional[JSONObject] = None,
        model: Optional[str] = None,
        explain: Optional[str] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> Ranked:
        """See :meth:`Client.rank`."""
        body: Dict[str, Any] = {
            "items": list(items),
            "history": list(history) if history is not None else None,
            "context": context,
            "model": model,
            "explain": explain,
            "diversity": diversity,
            "filter": filter,
            "boost": list(boost) if boost is not None else None,
            "promote": list(promote) if promote is not None else None,
            "max_per_category": max_per_category,
            "skip_rules": _strs(skip_rules),
        }
        body.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        c = _core.call("rankItems", {"key": user}, body=body)
        return cast(Ranked, await self._send(c))

    async def decide(
        self,
        loop: str,
        actions: Sequence[Union[str, Action]],
        *,
        context: Optional[JSONObject] = None,
        user: Optional[str] = None,
        slots: Optional[int] = None,
        baseline: Optional[str] = None,
        exclude: Optional[Sequence[str]] = None,
        decision_id: Optional[str] = None,
        defer_activation: Optional[bool] = None,
    ) -> Decision:
        """See :meth:`Client.decide`."""
        body = {
            "actions": _actions(actions),
            "context": context,
            "user": user,
            "slots": slots,
            "baseline": baseline,
            "exclude": _strs(exclude),
            "decision_id": decision_id,
            "defer_activation": defer_activation,
        }
        return cast(Decision, await self._send(_core.call("decide", {"key": loop}, body=body)))

    async def reward(
        self, decision_id: str, value: float, *, slot: Optional[int] = None
    ) -> RewardAck:
        """See :meth:`Client.reward`."""
        c = _core.call("rewardDecision", {"key": decision_id}, body={"value": value, "slot": slot})
        return cast(RewardAck, await self._send(c))

    async def train(
        self, *, wait: bool = True, timeout: Timeout = TRAIN_TIMEOUT
    ) -> Union[TrainOutcome, Started]:
        """See :meth:`Client.train`."""
        c = _core.call("trainModels", query={"wait": wait}, timeout=timeout)
        return cast(Union[TrainOutcome, Started], await self._send(c))

    async def models(self) -> Models:
        """See :meth:`Client.models`."""
        return cast(Models, await self._send(_core.call("listModels")))

    # What users were shown, what they hid, why an item is not shown -------------------------

    async def record_impressions(self, impressions: Sequence[ImpressionList]) -> ImpressionsStored:
        """See :meth:`Client.record_impressions`."""
        c = _core.call("postImpressions", body={"impressions": list(impressions)})
        return cast(ImpressionsStored, await self._send(c))

    async def hidden(self, user: str) -> Hidden:
        """See :meth:`Client.hidden`."""
        return cast(Hidden, await self._send(_core.call("getHidden", {"key": user})))

    async def hide(self, user: str, item: str) -> HiddenChange:
        """See :meth:`Client.hide`."""
        c = _core.call("hideItem", {"key": user, "item": item})
        return cast(HiddenChange, await self._send(c))

    async def unhide(self, user: str, item: str) -> HiddenChange:
        """See :meth:`Client.unhide`."""
        c = _core.call("unhideItem", {"key": user, "item": item})
        return cast(HiddenChange, await self._send(c))

    async def why_not(
        self,
        user: str,
        item: str,
        n: Optional[int] = None,
        *,
        model: Optional[str] = None,
        include_seen: Optional[bool] = None,
        categories: Optional[StrList] = None,
        exclude: Optional[StrList] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> WhyNot:
        """See :meth:`Client.why_not`."""
        query = {"item": item, "n": n, "model": model, "include_seen": include_seen}
        query.update(
            _ranking(
                categories, exclude, None, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        c = _core.call("whyNot", {"key": user}, query=query)
        return cast(WhyNot, await self._send(c))

    # Saved business rules (admin) ------------------------------------------------------------

    async def rules(self) -> Rules:
        """See :meth:`Client.rules`."""
        return cast(Rules, await self._send(_core.call("listRules")))

    async def get_rule(self, name: str) -> Rule:
        """See :meth:`Client.get_rule`."""
        return cast(Rule, await self._send(_core.call("getRule", {"key": name})))

    async def put_rule(
        self,
        name: str,
        *,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        routes: Optional[Sequence[str]] = None,
        enabled: Optional[bool] = None,
        description: Optional[str] = None,
    ) -> Rule:
        """See :meth:`Client.put_rule`."""
        body = {
            "filter": filter,
            "boost": list(boost) if boost is not None else None,
            "promote": list(promote) if promote is not None else None,
            "max_per_category": max_per_category,
            "routes": _strs(routes),
            "enabled": enabled,
            "description": description,
        }
        return cast(Rule, await self._send(_core.call("putRule", {"key": name}, body=body)))

    async def delete_rule(self, name: str) -> NameDeleted:
        """See :meth:`Client.delete_rule`."""
        return cast(NameDeleted, await self._send(_core.call("deleteRule", {"key": name})))

    # Decision loops --------------------------------------------------------------------------

    async def loops(self) -> Loops:
        """See :meth:`Client.loops`."""
        return cast(Loops, await self._send(_core.call("listLoops")))

    async def get_loop(self, loop: str) -> Loop:
        """See :meth:`Client.get_loop`."""
        return cast(Loop, await self._send(_core.call("getLoop", {"key": loop})))

    async def put_loop(
        self,
        loop: str,
        *,
        learner: Optional[JSONObject] = None,
        mode: Optional[str] = None,
        reward_wait_seconds: Optional[float] = None,
        default_reward: Optional[float] = None,
        reward_range: Optional[Sequence[float]] = None,
        max_actions: Optional[int] = None,
        explanation_terms: Optional[int] = None,
    ) -> Loop:
        """See :meth:`Client.put_loop`."""
        body = {
            "learner": learner,
            "mode": mode,
            "reward_wait_seconds": reward_wait_seconds,
            "default_reward": default_reward,
            "reward_range": list(reward_range) if reward_range is not None else None,
            "max_actions": max_actions,
            "explanation_terms": explanation_terms,
        }
        return cast(Loop, await self._send(_core.call("putLoop", {"key": loop}, body=body)))

    async def activate_decision(self, decision_id: str) -> Activation:
        """See :meth:`Client.activate_decision`."""
        c = _core.call("activateDecision", {"key": decision_id})
        return cast(Activation, await self._send(c))

    async def evaluate_loop(self, loop: str, *, max_decisions: Optional[int] = None) -> Evaluation:
        """See :meth:`Client.evaluate_loop`."""
        c = _core.call("evaluateLoop", {"key": loop}, query={"max_decisions": max_decisions})
        return cast(Evaluation, await self._send(c))

    async def apply_candidate(self, loop: str, candidate: str) -> Loop:
        """See :meth:`Client.apply_candidate`."""
        c = _core.call("applyCandidate", {"key": loop}, body={"candidate": candidate})
        return cast(Loop, await self._send(c))

    # Segments and audiences ------------------------------------------------------------------

    async def segments(self) -> Segments:
        """See :meth:`Client.segments`."""
        return cast(Segments, await self._send(_core.call("listSegments")))

    async def get_segment(self, name: str) -> Segment:
        """See :meth:`Client.get_segment`."""
        return cast(Segment, await self._send(_core.call("getSegment", {"key": name})))

    async def put_segment(
        self,
        name: str,
        kind: str,
        *,
        expression: Optional[str] = None,
        k: Optional[int] = None,
        seed: Optional[int] = None,
        refresh: Optional[str] = None,
        description: Optional[str] = None,
        export: Optional[JSONObject] = None,
    ) -> Segment:
        """See :meth:`Client.put_segment`."""
        body = {
            "kind": kind,
            "expression": expression,
            "k": k,
            "seed": seed,
            "refresh": refresh,
            "description": description,
            "export": export,
        }
        return cast(Segment, await self._send(_core.call("putSegment", {"key": name}, body=body)))

    async def delete_segment(self, name: str) -> NameDeleted:
        """See :meth:`Client.delete_segment`."""
        return cast(NameDeleted, await self._send(_core.call("deleteSegment", {"key": name})))

    async def refresh_segment(self, name: str) -> SegmentRefresh:
        """See :meth:`Client.refresh_segment`."""
        c = _core.call("refreshSegment", {"key": name})
        return cast(SegmentRefresh, await self._send(c))

    async def segment_members(
        self,
        name: str,
        *,
        cluster: Optional[int] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> SegmentMembers:
        """See :meth:`Client.segment_members`."""
        query = {"cluster": cluster, "limit": limit, "cursor": cursor}
        c = _core.call("segmentMembers", {"key": name}, query=query)
        return cast(SegmentMembers, await self._send(c))

    async def segment_sizes(self, name: str) -> SegmentSizes:
        """See :meth:`Client.segment_sizes`."""
        return cast(SegmentSizes, await self._send(_core.call("segmentSizes", {"key": name})))

    async def user_segments(self, user: str) -> UserSegments:
        """See :meth:`Client.user_segments`."""
        return cast(UserSegments, await self._send(_core.call("userSegments", {"key": user})))

    async def audience(
        self,
        *,
        items: Optional[Sequence[str]] = None,
        category: Optional[str] = None,
        filter: Optional[str] = None,
        n: Optional[int] = None,
        threshold: Optional[float] = None,
    ) -> Audience:
        """See :meth:`Client.audience`."""
        body = {
            "items": _strs(items),
            "category": category,
            "filter": filter,
            "n": n,
            "threshold": threshold,
        }
        return cast(Audience, await self._send(_core.call("queryAudience", body=body)))

    # Experiments (admin) ---------------------------------------------------------------------

    async def experiments(self) -> Experiments:
        """See :meth:`Client.experiments`."""
        return cast(Experiments, await self._send(_core.call("listExperiments")))

    async def get_experiment(self, name: str) -> Experiment:
        """See :meth:`Client.get_experiment`."""
        return cast(Experiment, await self._send(_core.call("getExperiment", {"key": name})))

    async def put_experiment(
        self,
        name: str,
        variants: Sequence[Variant],
        *,
        route: Optional[str] = None,
        holdout: Optional[float] = None,
        metrics: Optional[Sequence[Metric]] = None,
        alpha: Optional[float] = None,
        mde: Optional[float] = None,
        pre_period: Optional[str] = None,
        layer: Optional[str] = None,
        salt: Optional[str] = None,
        description: Optional[str] = None,
    ) -> Experiment:
        """See :meth:`Client.put_experiment`."""
        body = {
            "variants": list(variants),
            "route": route,
            "holdout": holdout,
            "metrics": list(metrics) if metrics is not None else None,
            "alpha": alpha,
            "mde": mde,
            "pre_period": pre_period,
            "layer": layer,
            "salt": salt,
            "description": description,
        }
        c = _core.call("putExperiment", {"key": name}, body=body)
        return cast(Experiment, await self._send(c))

    async def start_experiment(self, name: str) -> Experiment:
        """See :meth:`Client.start_experiment`."""
        c = _core.call("startExperiment", {"key": name})
        return cast(Experiment, await self._send(c))

    async def stop_experiment(self, name: str) -> Experiment:
        """See :meth:`Client.stop_experiment`."""
        c = _core.call("stopExperiment", {"key": name})
        return cast(Experiment, await self._send(c))

    async def experiment_report(self, name: str) -> ExperimentReport:
        """See :meth:`Client.experiment_report`."""
        c = _core.call("experimentReport", {"key": name})
        return cast(ExperimentReport, await self._send(c))

    async def delete_experiment(self, name: str) -> NameDeleted:
        """See :meth:`Client.delete_experiment`."""
        c = _core.call("deleteExperiment", {"key": name})
        return cast(NameDeleted, await self._send(c))

    # Reports, models and keys (admin) --------------------------------------------------------

    async def fairness_report(
        self,
        *,
        k: Optional[int] = None,
        users: Optional[int] = None,
        seed: Optional[int] = None,
        user_attributes: Optional[StrList] = None,
        item_attributes: Optional[StrList] = None,
        model: Optional[str] = None,
        categories: Optional[StrList] = None,
        diversity: Optional[float] = None,
        filter: Optional[str] = None,
        boost: Optional[Sequence[Boost]] = None,
        promote: Optional[Sequence[Promotion]] = None,
        max_per_category: Optional[int] = None,
        skip_rules: Optional[StrList] = None,
        max_impressions: Optional[int] = None,
        impression_window: Optional[str] = None,
        no_repeat_lists: Optional[int] = None,
        hide_similar: Optional[float] = None,
        calibration: Optional[float] = None,
        popularity: Optional[float] = None,
        popularity_method: Optional[str] = None,
        protected: Optional[str] = None,
        protected_share: Optional[float] = None,
        protected_alpha: Optional[float] = None,
    ) -> FairnessReport:
        """See :meth:`Client.fairness_report`."""
        query = {
            "k": k,
            "users": users,
            "seed": seed,
            "user_attribute": _strs(user_attributes),
            "item_attribute": _strs(item_attributes),
            "model": model,
        }
        query.update(
            _ranking(
                categories, None, None, diversity, filter, boost, promote,
                max_per_category, skip_rules,
            )
        )
        query.update(
            _rerank(
                max_impressions, impression_window, no_repeat_lists, hide_similar, calibration,
                popularity, popularity_method, protected, protected_share, protected_alpha,
            )
        )
        return cast(FairnessReport, await self._send(_core.call("fairnessReport", query=query)))

    async def tune(
        self,
        *,
        budget: Optional[int] = None,
        wait: bool = True,
        timeout: Timeout = TRAIN_TIMEOUT,
    ) -> Union[TrainOutcome, Started]:
        """See :meth:`Client.tune`."""
        query = {"wait": wait, "budget": budget}
        c = _core.call("tuneModels", query=query, timeout=timeout)
        return cast(Union[TrainOutcome, Started], await self._send(c))

    async def activate_model(self, version: int) -> ActiveModel:
        """See :meth:`Client.activate_model`."""
        c = _core.call("activateModel", {"version": str(version)})
        return cast(ActiveModel, await self._send(c))

    async def keys(self) -> ApiKeys:
        """See :meth:`Client.keys`."""
        return cast(ApiKeys, await self._send(_core.call("listKeys")))

    async def create_key(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        rate_per_second: Optional[float] = None,
    ) -> ApiKey:
        """See :meth:`Client.create_key`."""
        body = {"name": name, "scopes": list(scopes), "rate_per_second": rate_per_second}
        return cast(ApiKey, await self._send(_core.call("createKey", body=body)))

    async def revoke_key(self, prefix: str) -> ApiKey:
        """See :meth:`Client.revoke_key`."""
        return cast(ApiKey, await self._send(_core.call("revokeKey", {"key": prefix})))

    async def audit(
        self, *, limit: Optional[int] = None, cursor: Optional[str] = None
    ) -> AuditPage:
        """See :meth:`Client.audit`."""
        c = _core.call("getAudit", query={"limit": limit, "cursor": cursor})
        return cast(AuditPage, await self._send(c))
