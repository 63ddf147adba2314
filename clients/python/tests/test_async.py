"""The :class:`AsyncClient` against a live server: the same request layer as the sync client,
driven through asyncio, concurrent requests included."""

from __future__ import annotations

import asyncio
import re
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


def fresh(prefix: str) -> str:
    """A key no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


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
        gone = await self.client.delete_user_events(user, item, type="view")
        self.assertEqual(gone["deleted"], 0)
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

    async def test_impressions_hidden_and_why_not(self) -> None:
        user, list_id = fresh("async-seen"), fresh("list")
        stored = await self.client.record_impressions(
            [{"user": user, "items": ["b1", "b2"], "list_id": list_id}]
        )
        self.assertEqual(stored, {"lists": 1, "stored": 2})
        events = (await self.client.user_events(user))["events"]
        self.assertEqual(
            sorted((e["event_id"], e["type"]) for e in events),
            [(f"{list_id}#0", "impression"), (f"{list_id}#1", "impression")],
        )
        session = await self.client.recommend_session(
            ["b0"], n=4, model="knn", user=user, max_impressions=1
        )
        self.assertFalse({"b1", "b2"} & {r["item"] for r in session["items"]}, session)
        again = await self.client.popular(n=20, user=user, no_repeat_lists=1)
        self.assertEqual(len(again["items"]), 18, again)

        self.assertTrue((await self.client.hide(user, "a2"))["hidden"])
        hidden = await self.client.hidden(user)
        self.assertEqual([h["item"] for h in hidden["items"]], ["a2"])
        listed = await self.client.popular(n=20, user=user)
        self.assertNotIn("a2", [r["item"] for r in listed["items"]])
        why = await self.client.why_not(user, "a2", n=20)
        self.assertIsNone(why["position"], why)
        self.assertFalse((await self.client.unhide(user, "a2"))["hidden"])
        self.assertEqual((await self.client.hidden(user))["items"], [])
        self.assertIsNotNone((await self.client.why_not(user, "a2", n=20))["position"])

    async def test_rules(self) -> None:
        name = fresh("async-max1")
        await self.client.put_rule(name, max_per_category=1, routes=["popular"])
        try:
            self.assertEqual((await self.client.get_rule(name))["max_per_category"], 1)
            self.assertIn(name, [r["name"] for r in (await self.client.rules())["rules"]])
            one_each = await self.client.popular(n=5)
            # One per category: with two categories, two items.
            self.assertEqual(len(one_each["items"]), 2, one_each)
            self.assertIn(name, one_each["rules"])
        finally:
            self.assertEqual(await self.client.delete_rule(name), {"deleted": name})
        self.assertEqual(len((await self.client.popular(n=5))["items"]), 5)

    async def test_loops(self) -> None:
        loop = fresh("async-cfg-loop")
        await self.client.put_loop(loop, reward_range=[0, 10], default_reward=0)
        self.assertEqual((await self.client.get_loop(loop))["config"]["reward_range"], [0.0, 10.0])
        self.assertIn(loop, [l["name"] for l in (await self.client.loops())["loops"]])
        decisions = await asyncio.gather(
            *(self.client.decide(loop, ["x", "y"], defer_activation=True) for _ in range(3))
        )
        activations = await asyncio.gather(
            *(self.client.activate_decision(d["decision_id"]) for d in decisions)
        )
        self.assertTrue(all(a["activated"] and a["changed"] for a in activations), activations)
        for d in decisions:
            await self.client.reward(d["decision_id"], 10.0)
        self.assertEqual((await self.client.get_loop(loop))["stats"]["rewards"], 3)
        evaluation = await self.client.evaluate_loop(loop)
        self.assertEqual((evaluation["decisions"], evaluation["observed_reward"]), (3, 10.0))
        applied = await self.client.apply_candidate(loop, "exploration=epsilon_greedy(0.2)")
        exploration = applied["config"]["learner"]["exploration"]
        self.assertEqual(exploration["policy"], "epsilon_greedy", applied)

    async def test_segments_and_audience(self) -> None:
        name, plan = fresh("async-seg"), fresh("plan")
        users = [fresh("async-member") for _ in range(3)]
        await asyncio.gather(
            *(self.client.put_user(u, attributes={"plan": plan}) for u in users)
        )
        await self.client.put_segment(name, "rule", expression=f'plan = "{plan}"')
        try:
            self.assertEqual((await self.client.refresh_segment(name))["size"], 3)
            first = await self.client.segment_members(name, limit=2)
            rest = await self.client.segment_members(name, cursor=first["next_cursor"])
            got = [m["user"] for m in first["members"] + rest["members"]]
            self.assertEqual((len(first["members"]), sorted(got)), (2, sorted(users)))
            self.assertIsNone(rest["next_cursor"])
            mine = await self.client.user_segments(users[0])
            self.assertEqual([s["segment"] for s in mine["segments"]], [name])
            self.assertEqual((await self.client.get_segment(name))["expression"],
                             f'plan = "{plan}"')
            self.assertIn(name, [s["name"] for s in (await self.client.segments())["segments"]])
            self.assertEqual(len((await self.client.segment_sizes(name))["sizes"]), 1)
        finally:
            await self.client.delete_segment(name)
        with self.assertRaises(NotFoundError):
            await self.client.get_segment(name)

        # The users most drawn to the Alpha items are the a-viewers (even seeded users).
        audience = await self.client.audience(filter='category contains "Alpha"', n=5)
        self.assertEqual(audience["items_matched"], 10, audience)
        seeded = [u["user"] for u in audience["users"] if re.fullmatch(r"u\d+", u["user"])]
        self.assertGreaterEqual(len(seeded), 3, audience)
        self.assertTrue(all(int(u[1:]) % 2 == 0 for u in seeded), audience)

    async def test_experiments(self) -> None:
        name, user = fresh("async-exp"), fresh("async-subject")
        await self.client.put_experiment(
            name,
            [{"name": "control", "weight": 0}, {"name": "all", "config": {"model": "popular"}}],
            route="popular",
        )
        try:
            started = await self.client.start_experiment(name)
            self.assertEqual(started["status"], "running")
            served = await self.client.popular(n=1, user=user)
            self.assertEqual(served.get("experiments"), [{"experiment": name, "variant": "all"}])
            report = await self.client.experiment_report(name)
            self.assertEqual(report["users"], 1, report)
            listed = (await self.client.experiments())["experiments"]
            self.assertIn(name, [e["name"] for e in listed])
            await self.client.stop_experiment(name)
            self.assertEqual((await self.client.get_experiment(name))["status"], "stopped")
        finally:
            if (await self.client.get_experiment(name))["status"] == "running":
                await self.client.stop_experiment(name)
            await self.client.delete_experiment(name)

    async def test_fairness_models_and_keys(self) -> None:
        report = await self.client.fairness_report(k=3, users=8, seed=2, model="popular")
        self.assertEqual((report["k"], report["users"]), (3, 8), report)

        before = (await self.client.models())["active"]
        assert before is not None
        self.assertEqual(await self.client.activate_model(before), {"active": before})
        # Not waiting: the server tunes and trains in the background.
        started = await self.client.tune(budget=2, wait=False)
        self.assertEqual(started, {"status": "started", "budget": 2})
        for _ in range(100):
            status = await self.client.models()
            if not status["training"].get("running") and status["active"] != before:
                break
            await asyncio.sleep(0.1)
        self.assertNotEqual(status["active"], before, status)
        await self.client.activate_model(before)

        created = await self.client.create_key(fresh("async-w"), ["write"], rate_per_second=5)
        self.assertEqual(created["rate_per_second"], 5.0)
        keys = {k["prefix"]: k for k in (await self.client.keys())["keys"]}
        self.assertEqual(keys[created["prefix"]]["scopes"], ["write"])
        revoked = await self.client.revoke_key(created["prefix"])
        self.assertIsNotNone(revoked["revoked_at"])
        audit = await self.client.audit(limit=5)
        self.assertEqual(audit["entries"][0]["action"], "key.revoke", audit)


if __name__ == "__main__":
    unittest.main()
