"""The :class:`AsyncClient` against a live server: the same request layer as the sync client,
driven through asyncio, concurrent requests included."""

from __future__ import annotations

import asyncio
import unittest
import uuid
from typing import List

from bespoke_client import (
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
)
from bespoke_client.types import Event

from _live import seed, server


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    url: str
    key: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.url, cls.key = server()
        with Client(cls.url, cls.key) as client:
            seed(client)

    async def asyncSetUp(self) -> None:
        self.client = AsyncClient(self.url, self.key)

    async def asyncTearDown(self) -> None:
        await self.client.close()

    async def test_recommendations_follow_new_events(self) -> None:
        user = f"async-bob-{uuid.uuid4().hex[:8]}"
        before = await self.client.recommend(user, n=4, model="knn")
        self.assertFalse(before["personalized"], before)

        history: List[Event] = [
            {"user": user, "item": item, "type": "view"} for item in ("b0", "b1", "b2")
        ]
        sent = await self.client.send_events(history)
        self.assertEqual(sent["received"], 3)
        after = await self.client.recommend(user, n=4, model="knn")
        self.assertTrue(after["personalized"], after)
        keys = [r["item"] for r in after["items"]]
        self.assertEqual(len(keys), 4, after)
        self.assertTrue(all(k.startswith("b") for k in keys), after)
        self.assertFalse({"b0", "b1", "b2"} & set(keys), after)

        # Concurrent reads over one connection pool agree with each other.
        answers = await asyncio.gather(
            *(self.client.recommend(user, n=4, model="knn") for _ in range(5))
        )
        for answer in answers:
            self.assertEqual([r["item"] for r in answer["items"]], keys)
        similar, popular, ranked = await asyncio.gather(
            self.client.similar("b0", n=3),
            self.client.popular(n=3, categories="Alpha"),
            self.client.rank(user, ["a5", "b5", "b6"]),
        )
        self.assertTrue(all(r["item"].startswith("b") for r in similar["items"]), similar)
        self.assertTrue(all(r["item"].startswith("a") for r in popular["items"]), popular)
        self.assertEqual(ranked["items"][-1]["item"], "a5", ranked)

    async def test_users_items_export_and_erasure(self) -> None:
        user, item = f"async-user-{uuid.uuid4().hex[:8]}", f"async-item-{uuid.uuid4().hex[:8]}"
        await self.client.put_user(user, attributes={"country": "fr"})
        self.assertEqual((await self.client.get_user(user))["attributes"], {"country": "fr"})
        await self.client.put_item(item, categories=["Alpha"], available=True)
        self.assertTrue((await self.client.get_item(item))["available"])

        sent = await self.client.send_events([{"user": user, "item": item, "type": "like"}])
        with self.assertRaises(ConflictError):
            await self.client.send_events(
                [{"event_id": sent["event_ids"][0], "user": user, "item": item, "type": "view"}]
            )
        page = await self.client.user_events(user)
        self.assertEqual([e["event_id"] for e in page["events"]], sent["event_ids"])
        export = await self.client.export_user(user)
        self.assertEqual(export["user"]["key"], user)

        receipt = await self.client.delete_user(user)
        self.assertEqual(receipt["removed"]["events"], 1)
        again = await self.client.get_erasure(receipt["erasure_id"])
        self.assertEqual(again["status"], receipt["status"])
        with self.assertRaises(NotFoundError) as caught:
            await self.client.get_user(user)
        self.assertEqual(caught.exception.code, "not_found")
        self.assertTrue((await self.client.delete_item(item))["deleted"])

    async def test_decisions_and_models(self) -> None:
        loop = f"async-loop-{uuid.uuid4().hex[:8]}"
        decision = await self.client.decide(loop, ["x", "y"], context={"hour": 20})
        ack = await self.client.reward(decision["decision_id"], 0.5)
        self.assertEqual(ack["decision_id"], decision["decision_id"])
        self.assertEqual(ack["value"], 0.5)

        models = await self.client.models()
        self.assertIsNotNone(models["active"])

    async def test_errors(self) -> None:
        with self.assertRaises(BadRequestError) as caught:
            await self.client.popular(n=0)
        self.assertEqual(caught.exception.field, "n")
        with self.assertRaises(NotFoundError) as caught_404:
            await self.client.similar("no-such-item")
        self.assertEqual(caught_404.exception.status, 404)


if __name__ == "__main__":
    unittest.main()
