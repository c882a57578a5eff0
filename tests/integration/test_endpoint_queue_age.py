"""A service whose callers give up after a known time (serve's ``max_wait``) does not work on a request
that waited longer than that for its turn: it answers it busy (retryable) at once. Every request gets
an answer, and none is worked on after its caller stopped waiting."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import nats
import pytest

from servicekit.endpoints import Endpoint, serve
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration
WORK_S = 0.3
REQUESTS = 12


class Done(msgspec.Struct, frozen=True):
    waited: float


async def flood(nats_server: NatsServer, max_wait: float | None) -> tuple[list[float], list[str]]:
    """REQUESTS at once on a service that works on one at a time for WORK_S each: how long each that was
    worked on had waited, and each answer's outcome ("done" or its error code)."""
    subject = f"test.slow.{'aged' if max_wait else 'any'}"
    nc = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("admin"))
    worked: list[float] = []

    async def slow(body: bytes) -> Done:
        waited = time.monotonic() - float(body)
        worked.append(waited)
        await asyncio.sleep(WORK_S)
        return Done(waited=waited)

    service = await serve(nc, name="slow", version="0.1.0", description="test", queue="slow",
                          endpoints=[Endpoint("slow", subject, slow)], running=1, waiting=100, max_wait=max_wait)
    try:
        answers = await asyncio.gather(*(nc.request(subject, str(time.monotonic()).encode(), timeout=30)
                                         for _ in range(REQUESTS)))
    finally:
        await service.stop()
        await nc.close()
    outcomes = []
    for msg in answers:
        reply = json.loads(msg.data)
        outcomes.append("done" if "waited" in reply else str(reply["error"]["code"]))
        if "error" in reply:
            assert reply["error"]["retryable"] is True, reply
    return worked, outcomes


async def test_requests_that_waited_too_long_are_answered_busy_not_worked_on(nats_server: NatsServer) -> None:
    max_wait = 1.0
    worked, outcomes = await flood(nats_server, max_wait)
    assert len(outcomes) == REQUESTS  # every caller has its answer
    # one at a time, WORK_S each: those whose turn came within max_wait were done, the rest refused
    assert 2 <= outcomes.count("done") <= max_wait / WORK_S + 2, outcomes
    assert outcomes.count("done") + outcomes.count("Unavailable") == REQUESTS, outcomes
    assert len(worked) == outcomes.count("done")
    assert max(worked) <= max_wait + 0.1, worked  # nothing was begun after its wait ran out


async def test_without_max_wait_every_queued_request_is_worked_on(nats_server: NatsServer) -> None:
    worked, outcomes = await flood(nats_server, None)
    assert outcomes == ["done"] * REQUESTS
    assert max(worked) >= (REQUESTS - 1) * WORK_S * 0.9, worked
