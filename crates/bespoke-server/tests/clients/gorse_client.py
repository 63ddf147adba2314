"""Gorse's own Python client (pygorse, pinned in .ci/requirements-test.txt) against Bespoke's
Gorse-compatible routes under /api/. Run by the integration test `gorse_python_client` with
ENDPOINT, KEY (a write key, sent by pygorse in X-API-Key) and ADMIN_KEY (to train) set; exits
non-zero on any mismatch and prints a JSON summary."""
import json
import os
import sys
from datetime import datetime, timedelta, timezone

import requests
from gorse import Gorse, GorseException

endpoint = os.environ["ENDPOINT"]
client = Gorse(endpoint, os.environ["KEY"])


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


# Users and items.
check(client.insert_user({"UserId": "ann", "Labels": {"country": "fr"}, "Comment": "c"}) == {"RowAffected": 1}, "insert_user")
user = client.get_user("ann")
check(user["UserId"] == "ann" and user["Labels"] == {"country": "fr"} and user["Comment"] == "c", f"get_user: {user}")
users = [{"UserId": f"u{u}", "Labels": [], "Comment": ""} for u in range(60)]
check(client.insert_users(users) == {"RowAffected": 60}, "insert_users")

check(client.insert_item({"ItemId": "a0", "IsHidden": False, "Categories": ["books"], "Timestamp": "2026-01-01T00:00:00Z", "Labels": ["paper"], "Comment": "a book"}) == {"RowAffected": 1}, "insert_item")
item = client.get_item("a0")
check(item["ItemId"] == "a0" and item["Categories"] == ["books"] and item["IsHidden"] is False and item["Labels"] == ["paper"], f"get_item: {item}")
for i in range(1, 10):
    client.insert_item({"ItemId": f"a{i}", "IsHidden": False, "Categories": ["books"], "Timestamp": "2026-01-01T00:00:00Z", "Labels": [], "Comment": ""})
for i in range(10):
    client.insert_item({"ItemId": f"b{i}", "IsHidden": False, "Categories": ["films"], "Timestamp": "2026-01-01T00:00:00Z", "Labels": [], "Comment": ""})

# Recent feedback: recency weighting would make months-old feedback count for little.
hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
# Feedback: even users read a-items, odd users b-items, each skipping a third of them.
feedback = []
for u in range(60):
    group = "a" if u % 2 == 0 else "b"
    for i in range(10):
        if (u + i) % 3 != 0:
            feedback.append({"FeedbackType": "view", "UserId": f"u{u}", "ItemId": f"{group}{i}", "Timestamp": hour_ago})
check(client.insert_feedbacks(feedback) == {"RowAffected": len(feedback)}, "insert_feedbacks")
# One more through the single-feedback helper (it sends Value=0).
check(client.insert_feedback("like", "u0", "a1", hour_ago) == {"RowAffected": 1}, "insert_feedback")
likes = client.list_feedbacks("like", "u0")
check([(f["FeedbackType"], f["ItemId"]) for f in likes] == [("like", "a1")], f"list_feedbacks: {likes}")

# An unknown feedback type is refused with Bespoke's error, as a GorseException.
try:
    client.insert_feedback("nope", "u0", "a1", "2026-01-03T00:00:00Z")
    check(False, "an unknown feedback type was accepted")
except GorseException as e:
    check(e.status_code == 400 and "FeedbackType" in e.message, f"unknown type: {e.status_code} {e.message}")

r = requests.post(f"{endpoint}/v1/models/train?wait=true", headers={"Authorization": f"Bearer {os.environ['ADMIN_KEY']}"})
check(r.status_code == 200, f"train: {r.status_code} {r.text}")

# Recommendations (pygorse sends X-API-Version: 2 and gets scores): nothing u0 read, a-items first.
recs = client.get_recommend("u0", n=3)
rec_ids = [s.id for s in recs]
seen = {f"a{i}" for i in range(10) if i % 3 != 0}
check(len(recs) == 3 and not seen & set(rec_ids), f"recommend excludes read items: {rec_ids}")
check(rec_ids[0] in ("a0", "a3", "a6", "a9"), f"u0 reads a-items: {rec_ids}")
check(all(isinstance(s.score, float) for s in recs), "scores are numbers")
films = [s.id for s in client.get_recommend("u0", category="films", n=3)]
check(films and all(i.startswith("b") for i in films), f"category: {films}")

neighbors = client.get_neighbors("a1", n=3)
check(neighbors and all(n["Id"].startswith("a") and n["Id"] != "a1" for n in neighbors), f"neighbors are co-read: {neighbors}")

popular = requests.get(f"{endpoint}/api/popular?n=4", headers={"X-API-Key": os.environ["KEY"]}).json()
check(len(popular) == 4 and all("Id" in p and "Score" in p for p in popular), f"popular: {popular}")
latest = requests.get(f"{endpoint}/api/latest?n=4", headers={"X-API-Key": os.environ["KEY"]}).json()
check(len(latest) == 4, f"latest: {latest}")

session = client.session_recommend([
    {"FeedbackType": "view", "UserId": "", "ItemId": "b1", "Timestamp": "2026-01-02T00:00:00Z"},
    {"FeedbackType": "view", "UserId": "", "ItemId": "b2", "Timestamp": "2026-01-02T00:01:00Z"},
], n=3)
session_ids = [s["Id"] for s in session]
check(len(session_ids) == 3 and all(i.startswith("b") and i not in ("b1", "b2") for i in session_ids), f"session: {session}")

# Deleting a user's feedback on an item (the like and the views of u0 on a1).
check(client.delete_feedback("u0", "a1") == {"RowAffected": 2}, "delete_feedback")
check(client.list_feedbacks("like", "u0") == [], "the like is gone")

# Deletions.
check(client.delete_item("b5") == {"RowAffected": 1}, "delete_item")
try:
    client.get_item("b5")
    check(False, "a deleted item was found")
except GorseException as e:
    check(e.status_code == 404, f"deleted item: {e.status_code}")
check(client.delete_user("ann") == {"RowAffected": 1}, "delete_user")

print(json.dumps({"ok": True, "recommended": rec_ids, "neighbors": [n["Id"] for n in neighbors], "session": session_ids}))
