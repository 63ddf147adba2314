#!/usr/bin/env python3
"""Tailoring a message's tone per user with a Bespoke decision loop.

A shop has four versions of the same promotion, written in different tones. Each version is an
action whose features are its tone, its words and its length; each visit is a context with the
user's age group, device and the part of the day. The script plays 3,000 simulated visits:
it asks Bespoke which version to show, "sees" whether the user clicks (a hidden preference
that depends on who they are), and sends the reward. Bespoke learns which tone works for whom,
and the script prints the click rate as it improves, what the loop now chooses per segment,
and the off-policy evaluation of the logs.

Needs only Python's standard library and a running server:
    bespoke demo                     # or: bespoke serve, then create a key with `bespoke keys create`
    BESPOKE_KEY=bsk_... python3 examples/tone.py
"""
import json
import os
import random
import sys
import urllib.error
import urllib.request

URL = os.environ.get("BESPOKE_URL", "http://127.0.0.1:8080").rstrip("/")
KEY = os.environ.get("BESPOKE_KEY", "")
LOOP = os.environ.get("BESPOKE_LOOP", "promo-tone")
ROUNDS = int(os.environ.get("ROUNDS", "3000"))


def call(method, path, body=None):
    req = urllib.request.Request(URL + path, method=method)
    if KEY:
        req.add_header("Authorization", f"Bearer {KEY}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data) as resp:
            raw = resp.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path}: {e.code} {e.read().decode()}")


VARIANTS = [
    {"id": "formal", "text": "We are pleased to offer you 20% off your next order.", "tone": "formal"},
    {"id": "playful", "text": "Psst... 20% off is waiting for you! Go treat yourself", "tone": "playful"},
    {"id": "urgent", "text": "Last chance: 20% off ends tonight. Order now!", "tone": "urgent"},
    {"id": "friendly", "text": "Hi! Here's 20% off your next order, just for you.", "tone": "friendly"},
]


def action(v):
    words = sorted({w.strip(".,:!").lower() for w in v["text"].split() if len(w) > 3})
    return {"id": v["id"], "features": {"tone": v["tone"], "words": words, "length": len(v["text"]) / 60}}


ACTIONS = [action(v) for v in VARIANTS]


def preference(user, tone):
    """The hidden truth the loop has to discover: click probability of a tone for a user."""
    p = 0.04
    if user["age"] == "18-29" and user["device"] == "mobile" and tone == "playful":
        p = 0.22
    if user["age"] in ("45-64", "65+") and tone == "formal":
        p = 0.18
    if user["age"] == "30-44" and tone == "friendly":
        p = 0.16
    if user["daypart"] == "evening" and tone == "urgent":
        p += 0.08
    return p


def main():
    rng = random.Random(42)
    call("PUT", f"/v1/loops/{LOOP}", {"reward_wait_seconds": 600, "explanation_terms": 3})
    clicks = 0
    window = []
    for t in range(1, ROUNDS + 1):
        user = {
            "age": rng.choice(["18-29", "30-44", "45-64", "65+"]),
            "device": rng.choice(["mobile", "desktop"]),
            "daypart": rng.choice(["morning", "afternoon", "evening"]),
        }
        d = call("POST", f"/v1/loops/{LOOP}/decisions", {
            "context": {"user": {"age": user["age"], "device": user["device"]}, "time": {"daypart": user["daypart"]}},
            "actions": ACTIONS,
        })
        tone = d["ranking"][0]["action"]
        clicked = rng.random() < preference(user, tone)
        call("POST", f"/v1/decisions/{d['decision_id']}/reward", {"value": 1.0 if clicked else 0.0})
        clicks += clicked
        window.append(clicked)
        if t % 500 == 0:
            print(f"after {t:5} visits: click rate of the last 500 = {sum(window) / len(window):.3f}")
            window = []
    print(f"overall click rate {clicks / ROUNDS:.3f}; uniform choice would give about "
          f"{sum(preference({'age': a, 'device': dv, 'daypart': dp}, v['tone']) for a in ['18-29', '30-44', '45-64', '65+'] for dv in ['mobile', 'desktop'] for dp in ['morning', 'afternoon', 'evening'] for v in VARIANTS) / 96:.3f}")

    print("\nwhat the loop chooses now (most probable version, and why):")
    for age, device in [("18-29", "mobile"), ("30-44", "desktop"), ("65+", "desktop")]:
        d = call("POST", f"/v1/loops/{LOOP}/decisions", {
            "context": {"user": {"age": age, "device": device}, "time": {"daypart": "morning"}},
            "actions": ACTIONS, "defer_activation": True,
        })
        best = max(d["ranking"], key=lambda r: r["probability"])
        why = next(a for a in d["explanation"]["actions"] if a["action"] == best["action"])
        top = ", ".join(f"{c['feature']} {c['contribution']:+.3f}" for c in why["contributions"][:3])
        print(f"  {age:>5} on {device:<7} -> {best['action']:<8} p={best['probability']:.2f}  ({top})")

    report = call("GET", f"/v1/loops/{LOOP}/evaluation")
    print(f"\noff-policy evaluation of {report['decisions']} logged decisions (doubly robust, 95% interval):")
    for p in report["policies"]:
        if p["policy"] in ("online", "uniform", "current_greedy", "exploration=epsilon_greedy(0.2)", "interactions=none"):
            dr = p["dr"]
            print(f"  {p['policy']:<32} {dr['value']:.3f} [{dr['ci95'][0]:.3f}, {dr['ci95'][1]:.3f}]")
    print("most useful features:", ", ".join(f["namespace"] for f in report["feature_importance"][:3]))


if __name__ == "__main__":
    main()
