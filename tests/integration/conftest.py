"""Fixtures of the integration tests: the api service on a real, authenticated nats-server; both
nats-servers virtbus may run on."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from proto import subjects
from scheduler.api import Api
from servicekit import natsserver
from servicekit.endpoints import serve
from servicekit.store import Store

DEBIAN_NATS_SERVER = "/usr/sbin/nats-server"  # scripts/setup.sh --test installs Debian's package beside the wheel


@pytest.fixture(params=["wheel", "debian"])
def both_servers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test on the nats-server the venv brings (2.15) and on Debian 12's (2.9, where virtbus
    falls back when the venv lacks the wheel's). Use it as a mark (``usefixtures``), so it is set
    before the nats_server fixture (under ``store``) starts the program."""
    if request.param == "debian":
        if not os.access(DEBIAN_NATS_SERVER, os.X_OK):
            pytest.fail(f"{DEBIAN_NATS_SERVER} is missing: run scripts/setup.sh --test")
        monkeypatch.setenv(natsserver.ENV, DEBIAN_NATS_SERVER)
    else:
        monkeypatch.delenv(natsserver.ENV, raising=False)
    return str(request.param)


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Store]:
    """The api service answering on the store's server; yields the store (an admin connection)."""
    service = await serve(store.nc, name="virtbus-api", version="0.1.0", description="test",
                          queue=subjects.API_QUEUE, endpoints=Api(store).endpoints())
    try:
        yield store
    finally:
        await service.stop()
