"""A request to the api service as any NATS client sends it: plain JSON out, the reply's JSON back."""

from __future__ import annotations

import json
from typing import Any

from proto import subjects
from servicekit.store import Store


async def request(store: Store, kind: str, verb: str, body: object) -> dict[str, Any]:
    msg = await store.nc.request(subjects.api(kind, verb), json.dumps(body).encode(), timeout=5)
    reply = json.loads(msg.data)
    assert isinstance(reply, dict)
    return reply
