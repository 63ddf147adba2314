"""Azure's newer Personalizer client (azure-ai-personalizer, API 2022-09-01-preview: the version
in `?api-version=`) against Bespoke: single-slot rank/reward/activate and the multi-slot routes.
Run by the integration test `personalizer_python_client` with ENDPOINT and KEY set; exits
non-zero on any mismatch and prints a JSON summary."""
import json
import os
import sys

from azure.ai.personalizer import PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError

client = PersonalizerClient(os.environ["ENDPOINT"], AzureKeyCredential(os.environ["KEY"]))


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


actions = [
    {"id": "red-shirt", "features": [{"colour": "red", "kind": "shirt"}]},
    {"id": "blue-jeans", "features": [{"colour": "blue", "kind": "jeans"}]},
    {"id": "hat", "features": [{"kind": "hat", "price": 12}]},
    {"id": "socks", "features": [{"kind": "socks", "price": 5}]},
]
context = [{"device": "mobile"}, {"time": {"daypart": "evening"}}]

single = client.rank({"contextFeatures": context, "actions": actions, "excludedActions": ["hat"], "eventId": "new-sdk-1"})
check(single["eventId"] == "new-sdk-1", f"single-slot event id: {single}")
check(single["rewardActionId"] != "hat", "excluded action not chosen")
client.reward("new-sdk-1", {"value": 1.0})

slots = [
    {"id": "Main", "features": [{"size": "large", "position": "top"}], "baselineAction": "red-shirt", "excludedActions": ["socks"]},
    {"id": "Side", "features": [{"size": "small", "position": "right"}], "baselineAction": "socks"},
]
multi = client.rank_multi_slot({"contextFeatures": context, "actions": actions, "slots": slots, "eventId": "ms-1"})
check(multi["eventId"] == "ms-1", f"multi-slot event id: {multi}")
chosen = {s["id"]: s["rewardActionId"] for s in multi["slots"]}
check(set(chosen) == {"Main", "Side"}, f"one answer per slot: {multi}")
check(chosen["Main"] != "socks", "Main's exclusion respected")
check(chosen["Main"] != chosen["Side"], "slots take distinct actions")
client.reward_multi_slot("ms-1", {"reward": [{"slotId": "Main", "value": 1.0}, {"slotId": "Side", "value": 0.0}]})

deferred = client.rank_multi_slot({"contextFeatures": context, "actions": actions, "slots": slots, "deferActivation": True})
client.activate_multi_slot(deferred["eventId"])
client.reward_multi_slot(deferred["eventId"], {"reward": [{"slotId": "Side", "value": 0.5}]})

try:
    client.reward_multi_slot("ms-1", {"reward": [{"slotId": "Nowhere", "value": 1.0}]})
    check(False, "an unknown slot id must fail")
except HttpResponseError as e:
    check(e.status_code == 400, f"unknown slot gives 400, got {e.status_code}")

print(json.dumps({"single": single["rewardActionId"], "multi": chosen, "ok": True}))
