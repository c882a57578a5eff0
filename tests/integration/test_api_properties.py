"""Property: whatever arrives on an API subject (generated manifests with hostile values, request-shaped
JSON, any JSON, any bytes), the reply is JSON; an error is typed and never Internal or a traceback;
and an error changes nothing that is stored. The real api service, on a real nats-server."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proto import subjects
from scheduler.api import Api
from servicekit.endpoints import serve
from servicekit.store import Store
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration
T = TypeVar("T")

SUBJECTS = [subjects.api(kind, verb) for kind, verb in (
    ("vm", "create"), ("vm", "apply"), ("vm", "get"), ("vm", "list"), ("vm", "delete"), ("vm", "start"),
    ("vm", "stop"), ("vm", "restart"), ("vm", "expose"), ("vm", "unexpose"), ("exposure", "list"),
    ("fip", "create"), ("fip", "attach"), ("fip", "detach"), ("fip", "delete"), ("fip", "list"),
    ("vmi", "get"), ("vmi", "list"), ("node", "list"), ("network", "apply"), ("network", "list"),
    ("image", "list"), ("image", "delete"))]
HOSTILE: list[Any] = ["/", "..", "a/b", "-rf", "vm\n", "x\nlocal-hostname: evil", "; flush ruleset",
                      "tcp dport 1 accept; flush ruleset", "a" * 300, "été", "vbpods", "default", "0.0.0.0/0",
                      "127.0.0.1", "$(reboot)", "*", ">", "", " ", "\x00", 10**30, -1, 0, 65536, 1.5, True, None,
                      [], {}, [None], {"a": None}]
KUBEVIRT_VM = yaml.safe_load((EXAMPLES / "testvm-masquerade.yaml").read_text())
NAD = yaml.safe_load((EXAMPLES / "multus-br.yaml").read_text())


class Loop:
    """An event loop in a thread: hypothesis drives a plain function, the service lives on here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Service:
    def __init__(self, loop: Loop, nats_url: str) -> None:
        self.loop = loop
        self.store = loop.run(Store.connect(nats_url, "test-properties"))
        self.service = loop.run(self._serve())

    async def _serve(self) -> Any:
        return await serve(self.store.nc, name="virtbus-api", version="0.1.0", description="test",
                           queue=subjects.API_QUEUE, endpoints=Api(self.store).endpoints())

    async def _request(self, subject: str, body: bytes) -> bytes:
        return (await self.store.nc.request(subject, body, timeout=10)).data

    def request(self, subject: str, body: bytes) -> bytes:
        return self.loop.run(self._request(subject, body))

    async def _state(self) -> dict[str, int]:
        """The last sequence of every bucket's and the image store's stream: any write moves one."""
        names = [subjects.kv_stream(b) for b in self.store.raw] + [subjects.object_stream(subjects.OBJECT_STORE_IMAGES)]
        return {n: (await self.store.js.stream_info(n)).state.last_seq for n in names}

    def state(self) -> dict[str, int]:
        return self.loop.run(self._state())

    def close(self) -> None:
        self.loop.run(self.service.stop())
        self.loop.run(self.store.close())


@pytest.fixture
def service(nats_url: str) -> Iterator[Service]:
    loop = Loop()
    try:
        svc = Service(loop, nats_url)
        try:
            # a VM, a network and a floating IP exist, so requests naming them reach deeper paths
            fip = {"address": "192.168.100.10", "network": "multus-br"}
            for subject, body in [(subjects.api("network", "apply"), NAD), (subjects.api("vm", "create"), KUBEVIRT_VM),
                                  (subjects.api("fip", "create"), fip)]:
                assert b'"error"' not in svc.request(subject, json.dumps(body).encode())
            yield svc
        finally:
            svc.close()
    finally:
        loop.close()


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out += _paths(value, (*prefix, index))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """A real manifest with a few values (or keys) replaced by hostile ones."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        value = copy.deepcopy(draw(st.sampled_from(HOSTILE) | st.text(max_size=20)))  # HOSTILE holds [] and {}
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[str(value) if not isinstance(value, (dict, list)) else "x"] = parent.pop(path[-1])
        else:
            parent[path[-1]] = value
    return doc


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
EXPECTED = ("BadRequest", "Invalid", "NotFound", "AlreadyExists", "Conflict")
VALUE = st.sampled_from(HOSTILE) | st.integers(-5, 70000) | st.text(max_size=20)
# the fields each verb's request has, each a good value (of what the fixture made) or a hostile one
FIELDS = {"name": "testvm", "port": 80, "nodePort": 30080, "protocol": "TCP", "address": "192.168.100.10",
          "network": "multus-br", "vm": "testvm"}
VERB_FIELDS = {"expose": ["name", "port"], "unexpose": ["name", "port"], "create": ["address", "network"],
               "attach": ["address", "vm"], "detach": ["address"], "delete": ["name", "address"]}


@st.composite
def request_for(draw: st.DrawFn, subject: str) -> bytes:
    """A body shaped like the verb's request: its fields present, some good, some hostile."""
    verb = subject.rsplit(".", 1)[1]
    required = VERB_FIELDS.get(verb, ["name"])
    body = {key: draw(st.just(FIELDS[key]) | VALUE) for key in required}
    for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2)):
        body[key] = draw(st.just(FIELDS[key]) | VALUE)
    return json.dumps(body).encode()


BODIES = st.one_of(
    mutated(KUBEVIRT_VM).map(lambda d: json.dumps(d).encode()),
    mutated(NAD).map(lambda d: json.dumps(d).encode()),
    mutated({"apiVersion": "virtbus/v1", "kind": "VirtualMachine", "spec": {"name": "vm", "memory": "64Mi"}})
    .map(lambda d: json.dumps(d).encode()),
    JSON.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(subject=st.sampled_from(SUBJECTS), data=st.data())
def test_any_request_gets_a_typed_reply_and_an_error_stores_nothing(
        service: Service, subject: str, data: st.DataObject) -> None:
    body = data.draw(request_for(subject) | BODIES, label="body")
    before = service.state()
    reply = json.loads(service.request(subject, body))  # always JSON
    assert isinstance(reply, dict)
    if "error" in reply:
        error = reply["error"]
        assert error["code"] in EXPECTED, (subject, body, error)
        assert "Traceback" not in error["message"] and "Error(" not in error["message"]
        assert service.state() == before, (subject, body, error)
