"""Azure Personalizer's own Python client (azure-cognitiveservices-personalizer) against
Bespoke's /personalizer/v1.0 routes. Run by the integration test `personalizer_python_client`
with ENDPOINT and KEY set; exits non-zero on any mismatch and prints a JSON summary."""
import json
import os
import sys

from azure.cognitiveservices.personalizer import PersonalizerClient
from azure.cognitiveservices.personalizer.models import RankableAction, RankRequest
from msrest.authentication import CognitiveServicesCredentials

client = PersonalizerClient(os.environ["ENDPOINT"], CognitiveServicesCredentials(os.environ["KEY"]))

actions = [
    RankableAction(id="pasta", features=[{"taste": "salty", "spiceLevel": "medium"}, {"nutritionLevel": 5, "cuisine": "italian"}]),
    RankableAction(id="ice cream", features=[{"taste": "sweet", "spiceLevel": "none"}, {"nutritionalLevel": 2}]),
    RankableAction(id="juice", features=[{"taste": "sweet", "spiceLevel": "none"}, {"nutritionLevel": 5}, {"drink": True}]),
    RankableAction(id="salad", features=[{"taste": "salty", "spiceLevel": "low"}, {"nutritionLevel": 8}]),
]
context = [{"timeOfDay": "morning"}, {"tastePreference": "salty"}, {"device": {"os": "ios", "type": "phone"}}]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


resp = client.rank(rank_request=RankRequest(actions=actions, context_features=context, excluded_actions=["juice"], event_id="py-event-1"))
check(resp.event_id == "py-event-1", f"event id echoed, got {resp.event_id}")
check(resp.reward_action_id != "juice", "excluded action not chosen")
check(resp.reward_action_id == resp.ranking[0].id, "rewardActionId is the first ranked action")
check(len(resp.ranking) == 4, "every action ranked")
check(abs(sum(r.probability for r in resp.ranking) - 1.0) < 1e-9, "probabilities sum to 1")
check([r.probability for r in resp.ranking if r.id == "juice"] == [0.0], "excluded action has probability 0")
client.events.reward(event_id=resp.event_id, value=1.0)

deferred = client.rank(rank_request=RankRequest(actions=actions, context_features=context, defer_activation=True))
check(len(deferred.event_id) > 0, "an event id is issued when none is given")
client.events.activate(event_id=deferred.event_id)
client.events.reward(event_id=deferred.event_id, value=0.5)

try:
    client.events.reward(event_id="no-such-event", value=1.0)
    check(False, "reward for an unknown event must fail")
except Exception as e:  # msrest raises ErrorResponseException
    status = getattr(getattr(e, "response", None), "status_code", None)
    check(status == 404, f"unknown event gives 404, got {status}: {e}")

try:
    client.events.reward(event_id="py-event-1", value=1.0)
    check(False, "a second reward must fail")
except Exception as e:
    status = getattr(getattr(e, "response", None), "status_code", None)
    check(status == 409, f"second reward gives 409, got {status}")

print(json.dumps({"ranked": resp.reward_action_id, "deferred_event": deferred.event_id, "ok": True}))
