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
    Boost,
    Consent,
    Decision,
    Deleted,
    ErasureReceipt,
    Event,
    EventPage,
    EventsAccepted,
    Health,
    Item,
    JSONObject,
    Models,
    Popular,
    Promotion,
    Ranked,
    Recommendations,
    RewardAck,
    SessionItem,
    Similar,
    TrainOutcome,
    User,
    UserExport,
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
        """
        query = {"n": n, "model": model, "include_seen": include_seen}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
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
    ) -> Optional[TrainOutcome]:
        """``POST /v1/models/train`` (admin): trains and activates a new model version.

        With ``wait`` (the default) it returns when the version is trained, within
        ``timeout`` seconds; without, the training runs in the background and this returns
        ``None``. A training already running is a :class:`~bespoke_client.ConflictError`.
        """
        c = _core.call("trainModels", query={"wait": wait}, timeout=timeout)
        return cast(Optional[TrainOutcome], self._send(c))

    def models(self) -> Models:
        """``GET /v1/models`` (admin): stored versions, the active one, held-out metrics and
        the trainer's status."""
        return cast(Models, self._send(_core.call("listModels")))


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
    ) -> Recommendations:
        """See :meth:`Client.recommend`."""
        query = {"n": n, "model": model, "include_seen": include_seen}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
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
    ) -> Similar:
        """See :meth:`Client.similar`."""
        query = {"n": n, "model": model, "user": user}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
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
    ) -> Popular:
        """See :meth:`Client.popular`."""
        query = {"n": n, "window": window, "sort": sort, "user": user}
        query.update(
            _ranking(
                categories, exclude, explain, diversity, filter, boost, promote,
                max_per_category, skip_rules,
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
    ) -> Optional[TrainOutcome]:
        """See :meth:`Client.train`."""
        c = _core.call("trainModels", query={"wait": wait}, timeout=timeout)
        return cast(Optional[TrainOutcome], await self._send(c))

    async def models(self) -> Models:
        """See :meth:`Client.models`."""
        return cast(Models, await self._send(_core.call("listModels")))
