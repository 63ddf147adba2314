"""What the live tests share: the server they run against and the data they seed.

The tests need a running Bespoke server: ``BESPOKE_URL`` (e.g. ``http://127.0.0.1:8080``) and
``BESPOKE_KEY`` (an admin key). CI starts one per run
(``crates/bespoke-server/tests/integration/python_client.rs``); its store starts empty.
"""

from __future__ import annotations

import os
from typing import List, Tuple

from bespoke_client import Client
from bespoke_client.types import Event


def server() -> Tuple[str, str]:
    """The server's URL and admin key, from the environment; fails loudly without them."""
    url, key = os.environ.get("BESPOKE_URL"), os.environ.get("BESPOKE_KEY")
    if not url or not key:
        raise RuntimeError(
            "set BESPOKE_URL and BESPOKE_KEY (an admin key) to a running server to run these tests"
        )
    return url, key


def two_tastes() -> List[Event]:
    """60 users ``u0``..``u59``: the even ones view a-items ``a0``..``a9``, the odd ones
    b-items, each skipping a third of them; every event has a fixed id, so seeding twice is a
    replay that stores nothing new."""
    events: List[Event] = []
    for u in range(60):
        group = "a" if u % 2 == 0 else "b"
        for i in range(10):
            if (u + i) % 3 != 0:
                events.append(
                    {
                        "event_id": f"seed-u{u}-{group}{i}",
                        "user": f"u{u}",
                        "item": f"{group}{i}",
                        "type": "view",
                    }
                )
    return events


def seed(client: Client) -> None:
    """Items in two categories, the two-taste events and a trained model (idempotent)."""
    for group, category in (("a", "Alpha"), ("b", "Beta")):
        for i in range(10):
            client.put_item(f"{group}{i}", categories=[category], numeric={"price": 10.0 + i})
    answer = client.send_events(two_tastes())
    assert answer["received"] == len(two_tastes()), answer
    if client.models().get("active") is None:
        client.train()
