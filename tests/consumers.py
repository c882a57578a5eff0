"""The consumers nats-server makes while a block runs, as it announces each one (a JetStream
advisory): what an operator watching the server sees of a part that reads whole buckets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client

CREATED = "$JS.EVENT.ADVISORY.CONSUMER.CREATED."


@contextlib.asynccontextmanager
async def consumers_made(nc: Client) -> AsyncIterator[list[str]]:
    """Yields a list that gets ``<stream>.<consumer>`` for each consumer made until the block ends
    (the connection flushed first, so that what the server announced meanwhile is in)."""
    made: list[str] = []

    async def on_created(msg: Any) -> None:
        made.append(msg.subject.removeprefix(CREATED))
    advisories = await nc.subscribe(CREATED + ">", cb=on_created)
    try:
        yield made
        await nc.flush()
    finally:
        await advisories.unsubscribe()
