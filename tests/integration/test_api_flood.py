"""A request flood on the API (thousands a second) leaves the service answering: every request gets
an answer, a result or a quick retryable "busy", and a person's request in the middle of it too."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from nats.aio.msg import Msg

from proto import subjects
from servicekit.store import Store
from tests.conftest import NatsServer

pytestmark = pytest.mark.integration
FLOOD = 5000


async def test_a_flood_leaves_the_api_answering(api: Store, nats_server: NatsServer) -> None:
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "testvm"},
          "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {
              "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}}
    created = json.loads((await api.nc.request(subjects.api("vm", "create"), json.dumps(vm).encode(), timeout=5)).data)
    assert "item" in created, created
    flooder = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("admin"))
    person = await nats.connect(nats_server.url, nkeys_seed=nats_server.creds("viewer"))
    answers = {"ok": 0, "busy": 0, "other": 0}
    all_answered = asyncio.Event()

    async def count(msg: Msg) -> None:
        reply = json.loads(msg.data)
        code = reply.get("error", {}).get("code")
        answers["ok" if "items" in reply else "busy" if code == "Unavailable" else "other"] += 1
        if sum(answers.values()) == FLOOD:
            all_answered.set()

    try:
        inbox = flooder.new_inbox()
        await flooder.subscribe(inbox, cb=count, pending_msgs_limit=FLOOD * 2)
        start = time.monotonic()
        for _ in range(FLOOD):
            await flooder.publish(subjects.api("vm", "list"), b"{}", reply=inbox)
        await flooder.flush()
        sent_in = time.monotonic() - start
        # a person asks while the flood is being worked off: an answer within a second, every time
        latencies = []
        for _ in range(5):
            t0 = time.monotonic()
            msg = await person.request(subjects.api("vm", "get"), b'{"name": "testvm"}', timeout=5)
            latencies.append(time.monotonic() - t0)
            reply = json.loads(msg.data)
            assert "item" in reply or reply["error"]["code"] == "Unavailable", reply
        await asyncio.wait_for(all_answered.wait(), 60)
        print(f"flood: {FLOOD} requests sent in {sent_in:.2f}s; answers {answers}; "
              f"a person's get: max {max(latencies) * 1000:.0f} ms")
        assert sum(answers.values()) == FLOOD and answers["other"] == 0, answers
        assert answers["ok"] > 0
        assert max(latencies) < 1.0, latencies
        final = json.loads((await person.request(subjects.api("vm", "get"), b'{"name": "testvm"}', timeout=5)).data)
        assert final["item"]["vm"]["spec"]["name"] == "testvm"
    finally:
        await flooder.close()
        await person.close()
