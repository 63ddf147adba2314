"""The sync :class:`Client` against a live server: every covered operation, with assertions on
what the server did."""

from __future__ import annotations

import re
import unittest
import uuid
from typing import List

import httpx

from bespoke_client import (
    AuthenticationError,
    BadRequestError,
    BespokeConnectionError,
    BespokeError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from bespoke_client.types import Event

from _live import seed, server


def fresh(prefix: str) -> str:
    """A key no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class SyncClientTest(unittest.TestCase):
    url: str
    key: str
    client: Client

    @classmethod
    def setUpClass(cls) -> None:
        cls.url, cls.key = server()
        cls.client = Client(cls.url, cls.key)
        seed(cls.client)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.client.close()

    def test_health(self) -> None:
        self.assertEqual(self.client.health(), {"status": "ok"})

    def test_recommendations_follow_new_events(self) -> None:
        user = fresh("sync-ann")
        before = self.client.recommend(user, n=4, model="knn")
        self.assertFalse(before["personalized"], before)
        self.assertTrue(all(r["reasons"] for r in before["items"]), before)

        history: List[Event] = [
            {"user": user, "item": item, "type": "view"} for item in ("a0", "a1", "a2")
        ]
        sent = self.client.send_events(history)
        self.assertEqual(sent["received"], 3)
        after = self.client.recommend(user, n=4, model="knn")
        self.assertTrue(after["personalized"], after)
        keys = [r["item"] for r in after["items"]]
        self.assertEqual(len(keys), 4, after)
        # An a-viewer's neighbours are a-items; the history is not recommended back.
        self.assertTrue(all(k.startswith("a") for k in keys), after)
        self.assertFalse({"a0", "a1", "a2"} & set(keys), after)
        named = {reason.get("item") for r in after["items"] for reason in r["reasons"]}
        self.assertTrue(named & {"a0", "a1", "a2"}, after)

        full = self.client.recommend(user, n=2, model="als", explain="full")
        for r in full["items"]:
            total = sum(c["value"] for c in r["contributions"])
            self.assertAlmostEqual(total, r["score"], delta=1e-4 + 1e-4 * abs(r["score"]))

    def test_events_are_idempotent_by_id(self) -> None:
        user = fresh("sync-idem")
        events: List[Event] = [
            {"user": user, "item": "b1", "type": "view"},
            {"user": user, "item": "b2", "type": "click"},
        ]
        first = self.client.send_events(events)
        self.assertEqual(len(first["event_ids"]), 2)
        self.assertNotIn("event_id", events[0], "the caller's events are not modified")
        # Sending the same events again, with the ids the first answer gave, is a replay.
        again: List[Event] = [
            {"event_id": i, "user": e["user"], "item": e["item"], "type": e["type"]}
            for e, i in zip(events, first["event_ids"])
        ]
        second = self.client.send_events(again)
        self.assertEqual(second["event_ids"], first["event_ids"])
        self.assertEqual(len(self.client.user_events(user)["events"]), 2)

        # Batches are split and the ids come back in order.
        many: List[Event] = [
            {"user": user, "item": f"b{i % 10}", "type": "view"} for i in range(25)
        ]
        split = self.client.send_events(many, batch_size=10)
        self.assertEqual(split["received"], 25)
        self.assertEqual(len(set(split["event_ids"])), 25)
        page = self.client.user_events(user, limit=10)
        self.assertEqual(len(page["events"]), 10)
        self.assertIsNotNone(page["next_cursor"])

        # Undo: the user's events on one item go, of one type or all of them.
        gone = self.client.delete_user_events(user, "b3", type="like")
        self.assertEqual(gone, {"user": user, "item": "b3", "deleted": 0})
        gone = self.client.delete_user_events(user, "b3")
        self.assertEqual(gone["deleted"], 3)
        left = self.client.user_events(user, limit=100)["events"]
        self.assertEqual(len(left), 27 - 3)
        self.assertNotIn("b3", [e["item"] for e in left])

        with self.assertRaises(ConflictError) as caught:
            self.client.send_events([{**again[0], "type": "purchase"}])
        self.assertEqual(caught.exception.status, 409)
        self.assertEqual(caught.exception.code, "event_conflict")

    def test_users_and_items(self) -> None:
        user, item = fresh("sync-user"), fresh("sync-item")
        created = self.client.put_user(
            user, attributes={"plan": "pro"}, consent={"training": False}
        )
        self.assertEqual(created["key"], user)
        got = self.client.get_user(user)
        self.assertEqual(got["attributes"], {"plan": "pro"})
        self.assertFalse(got["consent"]["training"])

        put = self.client.put_item(
            item,
            categories=["Books"],
            text={"title": "Dune"},
            numeric={"price": 9.99},
            attributes={"author": "Herbert"},
            embeddings={"text": [0.1, -0.5, 0.3]},
        )
        self.assertEqual(put["key"], item)
        self.assertEqual(self.client.get_item(item)["categories"], ["Books"])
        self.assertTrue(self.client.delete_item(item)["deleted"])
        with self.assertRaises(NotFoundError) as caught:
            self.client.get_item(item)
        self.assertEqual(caught.exception.status, 404)
        self.assertEqual(caught.exception.code, "not_found")

    def test_similar_popular_session_and_filters(self) -> None:
        similar = self.client.similar("a0", n=3)
        self.assertEqual(similar["item"], "a0")
        self.assertTrue(all(r["item"].startswith("a") for r in similar["items"]), similar)

        popular = self.client.popular(n=5, categories=["Beta"])
        self.assertEqual(len(popular["items"]), 5)
        self.assertTrue(all(r["item"].startswith("b") for r in popular["items"]), popular)

        cheap = self.client.popular(n=20, filter="price < 12", exclude=["a0"])
        keys = {r["item"] for r in cheap["items"]}
        self.assertEqual(keys, {"a1", "b0", "b1"}, cheap)
        self.assertIn("request.filter", cheap["rules"])

        boosted = self.client.popular(
            n=3,
            boost=[{"if": 'category contains "Beta"', "by": 100}],
            promote=[{"slot": 1, "if": "price > 18"}],
        )
        self.assertTrue(boosted["items"][0]["item"] in ("a9", "b9"), boosted)
        self.assertIn("request.boost[0]", boosted["rules"])

        session = self.client.recommend_session(
            ["b0", {"item": "b1", "weight": 2}], n=3, model="knn"
        )
        self.assertTrue(all(r["item"].startswith("b") for r in session["items"]), session)

    def test_rank_supplied_candidates(self) -> None:
        ranked = self.client.rank("u0", ["b3", "a3", "no-such-item"], explain="full")
        keys = [r["item"] for r in ranked["items"]]
        self.assertEqual(keys[-1], "no-such-item")
        self.assertTrue(ranked["items"][-1]["unknown"])
        self.assertIsNone(ranked["items"][-1]["score"])
        self.assertEqual(set(keys), {"b3", "a3", "no-such-item"})
        with self.assertRaises(BadRequestError) as caught:
            self.client.rank("u0", ["a1", "a1"])
        self.assertEqual(caught.exception.field, "items[1]")

    def test_decisions(self) -> None:
        loop = fresh("sync-loop")
        decision = self.client.decide(
            loop,
            ["sale", {"id": "new-in", "features": {"kind": "novelty"}}],
            context={"device": "mobile"},
        )
        self.assertEqual(decision["loop"], loop)
        chosen = decision["ranking"][0]["action"]
        self.assertIn(chosen, ("sale", "new-in"))
        ack = self.client.reward(decision["decision_id"], 1.0)
        self.assertEqual(ack["action"], chosen)
        self.assertTrue(ack["learned"], ack)
        with self.assertRaises(NotFoundError):
            self.client.reward("no-such-decision", 1.0)

    def test_export_and_erasure(self) -> None:
        user = fresh("sync-erase")
        self.client.send_events([{"user": user, "item": "a1", "type": "purchase"}])
        export = self.client.export_user(user)
        self.assertEqual(export["format"], "bespoke.user-export.v1")
        self.assertEqual([e["item"] for e in export["events"]], ["a1"])

        receipt = self.client.delete_user(user)
        self.assertEqual(receipt["key"], user)
        self.assertEqual(receipt["removed"]["events"], 1)
        stored = self.client.get_erasure(receipt["erasure_id"])
        self.assertEqual(stored["erasure_id"], receipt["erasure_id"])
        with self.assertRaises(NotFoundError):
            self.client.get_user(user)

    def test_models(self) -> None:
        models = self.client.models()
        self.assertIsNotNone(models["active"])
        self.assertIn(models["active"], [m["version"] for m in models["models"]])

    def test_errors_carry_status_code_and_field(self) -> None:
        with self.assertRaises(BadRequestError) as caught:
            self.client.recommend("u0", n=0)
        error = caught.exception
        self.assertEqual((error.status, error.code, error.field), (400, "invalid_field", "n"))
        self.assertIsInstance(error, BespokeError)
        self.assertIn("n must be", str(error))

        with Client(self.url, "bsk_00000000_" + "0" * 64) as wrong:
            with self.assertRaises(AuthenticationError) as caught_auth:
                wrong.popular()
        self.assertEqual(caught_auth.exception.status, 401)

        with Client("http://127.0.0.1:9", self.key, max_retries=0, timeout=2) as nowhere:
            with self.assertRaises(BespokeConnectionError):
                nowhere.health()

    def test_rate_limit_exposes_retry_after_and_retries(self) -> None:
        # A read key limited to 1 request/s: the client raises RateLimitError without retries
        # and, with them, waits Retry-After and gets through.
        created = httpx.post(
            f"{self.url}/v1/keys",
            headers={"Authorization": f"Bearer {self.key}"},
            json={"name": fresh("slow"), "scopes": ["read"], "rate_per_second": 1},
        )
        created.raise_for_status()
        slow_key = created.json()["key"]
        with Client(self.url, slow_key, max_retries=0) as slow:
            with self.assertRaises(RateLimitError) as caught:
                for _ in range(20):
                    slow.popular(n=1)
            self.assertEqual(caught.exception.status, 429)
            retry_after = caught.exception.retry_after
            assert retry_after is not None, "a 429 says when to retry"
            self.assertGreater(retry_after, 0)
        with Client(self.url, slow_key, max_retries=3) as patient:
            for _ in range(3):
                self.assertEqual(len(patient.popular(n=1)["items"]), 1)

    def test_impressions_are_stored_as_events(self) -> None:
        user, list_id = fresh("sync-seen"), fresh("list")
        stored = self.client.record_impressions(
            [{"user": user, "items": ["a1", "a2", "a3"], "list_id": list_id}]
        )
        self.assertEqual(stored, {"lists": 1, "stored": 3})
        events = self.client.user_events(user)["events"]
        self.assertEqual({e["type"] for e in events}, {"impression"})
        self.assertEqual(
            {e["event_id"]: e["item"] for e in events},
            {f"{list_id}#0": "a1", f"{list_id}#1": "a2", f"{list_id}#2": "a3"},
        )
        with self.assertRaises(BadRequestError):
            self.client.record_impressions([{"user": user, "items": []}])

        # The no-repeat policy reads them: shown once is too often with max_impressions=1.
        seen = {"a1", "a2", "a3"}
        default = self.client.popular(n=20, user=user)
        self.assertLessEqual(seen, {r["item"] for r in default["items"]})
        capped = self.client.popular(n=20, user=user, max_impressions=1)
        self.assertEqual(len(capped["items"]), 17, capped)
        self.assertFalse(seen & {r["item"] for r in capped["items"]}, capped)
        fresh_list = self.client.recommend(user, n=20, no_repeat_lists=1)
        self.assertFalse(seen & {r["item"] for r in fresh_list["items"]}, fresh_list)
        why = self.client.why_not(user, "a1", n=20, max_impressions=1)
        stages = [(s["stage"], s["outcome"], s.get("rule")) for s in why["stages"]]
        self.assertIn(("rule", "removed", "no_repeat"), stages, why)

    def test_hidden_items_leave_every_list(self) -> None:
        user = fresh("sync-hide")
        self.client.send_events([{"user": user, "item": "b0", "type": "view"}])
        self.assertIn("b1", [r["item"] for r in self.client.popular(n=20, user=user)["items"]])

        self.assertEqual(self.client.hide(user, "b1")["hidden"], True)
        hidden = self.client.hidden(user)
        self.assertEqual(hidden["user"], user)
        self.assertEqual([(h["item"], h["by"]) for h in hidden["items"]], [("b1", "block")])
        self.assertNotIn("b1", [r["item"] for r in self.client.popular(n=20, user=user)["items"]])
        self.assertNotIn("b1", [r["item"] for r in self.client.recommend(user, n=19)["items"]])

        self.assertFalse(self.client.unhide(user, "b1")["hidden"])
        self.assertEqual(self.client.hidden(user)["items"], [])
        self.assertIn("b1", [r["item"] for r in self.client.popular(n=20, user=user)["items"]])

    def test_why_not(self) -> None:
        shown = self.client.recommend("u0", n=3, model="knn")["items"]
        first = self.client.why_not("u0", shown[0]["item"], n=3, model="knn")
        self.assertEqual(first["position"], 1, first)
        # A b-item is far down an a-viewer's list: not shown, and the answer says which stage.
        missing = self.client.why_not("u0", "b5", n=3, model="knn", exclude=["a9"])
        self.assertEqual(missing["item"], "b5")
        self.assertIsNone(missing["position"], missing)
        self.assertTrue(missing["verdict"].startswith("not shown"), missing)
        self.assertTrue(missing["stages"], missing)
        filtered = self.client.why_not("u0", "a9", n=3, filter="price < 12")
        self.assertIsNone(filtered["position"], filtered)
        removed = [(s["stage"], s["outcome"], s.get("rule")) for s in filtered["stages"]]
        self.assertIn(("rule", "removed", "request.filter"), removed, filtered)

    def test_saved_rules_apply_until_deleted(self) -> None:
        name = fresh("sync-cheap")
        rule = self.client.put_rule(
            name, filter="price < 12", routes=["popular"], description="cheap only"
        )
        try:
            self.assertEqual(rule["name"], name)
            self.assertEqual(self.client.get_rule(name)["filter"], "price < 12")
            self.assertIn(name, [r["name"] for r in self.client.rules()["rules"]])
            cheap = self.client.popular(n=20)
            self.assertEqual({r["item"] for r in cheap["items"]}, {"a0", "a1", "b0", "b1"})
            self.assertIn(name, cheap["rules"])
            # A request may skip a saved rule by name; other routes never saw it.
            self.assertEqual(len(self.client.popular(n=20, skip_rules=[name])["items"]), 20)
            self.assertNotIn(name, self.client.similar("a0", n=3).get("rules", []))
        finally:
            self.assertEqual(self.client.delete_rule(name), {"deleted": name})
        self.assertEqual(len(self.client.popular(n=20)["items"]), 20)
        with self.assertRaises(NotFoundError):
            self.client.get_rule(name)

        # Both changes are in the audit log, newest first, under this key's prefix.
        page = self.client.audit(limit=20)
        mine = [(e["action"], e["actor"]) for e in page["entries"] if e.get("target") == name]
        self.assertEqual(mine, [("rule.delete", self.key[:12]), ("rule.put", self.key[:12])])
        first = self.client.audit(limit=1)
        self.assertIsNotNone(first["next_cursor"], "the rule's two changes are two entries")
        older = self.client.audit(limit=1, cursor=first["next_cursor"])
        self.assertLess(older["entries"][0]["seq"], first["entries"][0]["seq"])

    def test_loop_configuration_activation_and_evaluation(self) -> None:
        loop = fresh("sync-cfg-loop")
        configured = self.client.put_loop(
            loop, reward_range=[0, 1], learner={"exploration": {"policy": "greedy"}}
        )
        self.assertEqual(configured["name"], loop)
        self.assertEqual(configured["config"]["reward_range"], [0.0, 1.0])
        learner = self.client.get_loop(loop)["config"]["learner"]
        self.assertEqual(learner["exploration"]["policy"], "greedy")
        self.assertIn(loop, [l["name"] for l in self.client.loops()["loops"]])

        decision = self.client.decide(loop, ["x", "y"], defer_activation=True)
        self.assertFalse(decision["activated"], decision)
        activated = self.client.activate_decision(decision["decision_id"])
        self.assertEqual((activated["activated"], activated["changed"]), (True, True))
        self.assertFalse(self.client.activate_decision(decision["decision_id"])["changed"])
        self.client.reward(decision["decision_id"], 1.0)
        other = self.client.decide(loop, ["x", "y"])
        with self.assertRaises(BadRequestError) as caught:
            self.client.reward(other["decision_id"], 5.0)  # outside the configured range
        self.assertEqual(caught.exception.field, "value")
        self.assertEqual(self.client.get_loop(loop)["stats"]["rewards"], 1)

        evaluation = self.client.evaluate_loop(loop, max_decisions=100)
        self.assertEqual(evaluation["decisions"], 1)
        self.assertEqual(evaluation["observed_reward"], 1.0)
        policies = [p["policy"] for p in evaluation["policies"]]
        self.assertIn("online", policies)
        candidate = next(p for p in policies if p.startswith("learning_rate="))
        applied = self.client.apply_candidate(loop, candidate)
        rate = float(candidate.split("=")[1])
        self.assertEqual(applied["config"]["learner"]["learning_rate"], rate)
        with self.assertRaises(NotFoundError):
            self.client.get_loop(fresh("no-such-loop"))

    def test_segments_and_audiences(self) -> None:
        name, user, plan = fresh("sync-seg"), fresh("sync-member"), fresh("plan")
        self.client.put_user(user, attributes={"plan": plan})
        created = self.client.put_segment(
            name, "rule", expression=f'plan = "{plan}"', description="one user"
        )
        try:
            self.assertEqual(created["kind"], "rule")
            self.assertTrue(created["webhook_secret"].startswith("whsec_"), created)
            refreshed = self.client.refresh_segment(name)
            self.assertEqual(refreshed["size"], 1, refreshed)
            members = self.client.segment_members(name, limit=10)
            self.assertEqual([m["user"] for m in members["members"]], [user])
            self.assertIsNone(members["next_cursor"])
            self.assertIn(name, [s["segment"] for s in self.client.user_segments(user)["segments"]])
            self.assertEqual(self.client.get_segment(name)["last_refresh"]["size"], 1)
            self.assertIn(name, [s["name"] for s in self.client.segments()["segments"]])
            self.assertEqual([p["size"] for p in self.client.segment_sizes(name)["sizes"]], [1])
        finally:
            self.assertEqual(self.client.delete_segment(name), {"deleted": name})
        with self.assertRaises(NotFoundError):
            self.client.get_segment(name)

        # The users most drawn to Beta are the b-viewers (odd seeded users).
        audience = self.client.audience(category="Beta", n=5)
        self.assertEqual(audience["items_matched"], 10, audience)
        seeded = [u["user"] for u in audience["users"] if re.fullmatch(r"u\d+", u["user"])]
        self.assertGreaterEqual(len(seeded), 3, audience)
        self.assertTrue(all(int(u[1:]) % 2 == 1 for u in seeded), audience)
        with self.assertRaises(BadRequestError):
            self.client.audience(n=5)  # no items, category or filter

    def test_experiment_lifecycle(self) -> None:
        name, user = fresh("sync-exp"), fresh("sync-subject")
        draft = self.client.put_experiment(
            name,
            [{"name": "control"}, {"name": "pop", "config": {"model": "popular"}}],
            route="popular",
            metrics=[{"kind": "conversion", "name": "bought", "event": "purchase"}],
        )
        self.assertEqual((draft["name"], draft["status"]), (name, "draft"))
        try:
            self.assertEqual(self.client.start_experiment(name)["status"], "running")
            served = self.client.popular(n=2, user=user)
            self.assertEqual(
                [e["experiment"] for e in served.get("experiments", [])], [name], served
            )
            self.assertIn(name, [e["name"] for e in self.client.experiments()["experiments"]])
            report = self.client.experiment_report(name)
            self.assertEqual(report["experiment"], name)
            self.assertEqual(report["users"], 1, report)
            self.assertEqual([v["variant"] for v in report["variants"]], ["control", "pop"])
            self.assertEqual(self.client.stop_experiment(name)["status"], "stopped")
            self.assertEqual(self.client.get_experiment(name)["status"], "stopped")
        finally:
            # A running experiment would keep serving its variants to the other tests.
            if self.client.get_experiment(name)["status"] == "running":
                self.client.stop_experiment(name)
            self.assertEqual(self.client.delete_experiment(name), {"deleted": name})
        with self.assertRaises(NotFoundError):
            self.client.get_experiment(name)

    def test_fairness_report(self) -> None:
        report = self.client.fairness_report(k=5, users=10, seed=1)
        self.assertEqual((report["k"], report["users"]), (5, 10), report)
        self.assertGreaterEqual(report["catalog_items"], 20)
        coverage = report["coverage"]
        assert coverage is not None
        self.assertTrue(0 < coverage <= 1, report)
        only_beta = self.client.fairness_report(k=5, users=10, seed=1, categories=["Beta"])
        self.assertLessEqual(only_beta["coverage"] or 0, 0.5, only_beta)

        # FA*IR on a ranking route: an a-viewer's a-only list makes room for the protected group.
        plain = self.client.recommend("u0", n=4, model="knn")
        self.assertTrue(all(r["item"].startswith("a") for r in plain["items"]), plain)
        fair = self.client.recommend(
            "u0", n=4, model="knn", protected='category contains "Beta"', protected_share=0.5
        )
        self.assertTrue(any(r["item"].startswith("b") for r in fair["items"]), fair)

    def test_tune_and_activate_a_model_version(self) -> None:
        before = self.client.models()["active"]
        assert before is not None
        tuned = self.client.tune(budget=2)
        assert tuned is not None
        try:
            self.assertGreater(tuned["version"], before)
            self.assertTrue(tuned["activated"])
            self.assertEqual(self.client.models()["active"], tuned["version"])
        finally:
            # Back to the version the other tests expect.
            self.assertEqual(self.client.activate_model(before), {"active": before})
        self.assertEqual(self.client.models()["active"], before)
        with self.assertRaises(NotFoundError):
            self.client.activate_model(999999)

    def test_api_keys(self) -> None:
        name = fresh("sync-reader")
        created = self.client.create_key(name, ["read"])
        key, prefix = created["key"], created["prefix"]
        self.assertTrue(key.startswith(prefix), created)
        listed = {k["prefix"]: k for k in self.client.keys()["keys"]}
        self.assertEqual(listed[prefix]["name"], name)
        self.assertNotIn("key", listed[prefix], "the key itself is shown once")
        with Client(self.url, key) as reader:
            self.assertEqual(len(reader.popular(n=1)["items"]), 1)
            with self.assertRaises(PermissionDeniedError):
                reader.put_item(fresh("no-write"), categories=["Alpha"])
            revoked = self.client.revoke_key(prefix)
            self.assertIsNotNone(revoked["revoked_at"])
            with self.assertRaises(AuthenticationError):
                reader.popular(n=1)


if __name__ == "__main__":
    unittest.main()
