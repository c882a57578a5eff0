"""Fixtures of the integration tests: the api service on a real, authenticated nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from proto import subjects
from scheduler.api import Api
from servicekit.endpoints import serve
from servicekit.store import Store


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Store]:
    """The api service answering on the store's server; yields the store (an admin connection)."""
    service = await serve(store.nc, name="virtbus-api", version="0.1.0", description="test",
                          queue=subjects.API_QUEUE, endpoints=Api(store).endpoints())
    try:
        yield store
    finally:
        await service.stop()
