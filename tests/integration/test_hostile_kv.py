"""Hostile entries written straight into KV (a raw nats-py client, as anyone who reaches NATS could):
every watch goes on and still delivers the good values after them, no hostile key reaches a service,
the controllers and the node's composers see only valid values, nothing outside the state directory
is touched, and each bad entry is reported once, in a log line and a StoredValue event."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.js.kv import KeyValue

from ctl.client import ApiClient
from handler.agent import Agent
from handler.launchers import Launchers, NodePaths
from handler.nodeports import NodePorts
from handler.podnet import PodNetwork, pod_routes
from proto import subjects
from proto.events import Event
from proto.nodevmis import NodeVmi
from proto.spec import RunStrategy, VMSpec
from proto.state import VM, VMI, Exposure, Node, Phase, VMIInterface
from scheduler.controllers import Scheduler
from scheduler.nodevmis import NodeVmiMirror
from servicekit import nftables
from servicekit.fake_netlink import FakeNetlink
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Change, Store

pytestmark = pytest.mark.integration
HOSTILE_KEYS = ["/", "-rf", "a/b", "/etc/passwd", "a.b"]  # the server stores these (".." it does not route)


def vmi(name: str, *, node: str | None = "node1", phase: Phase = Phase.PENDING, ip: str | None = None) -> VMI:
    return VMI(name=name, uid=f"{name}-uid", spec=VMSpec(name=name), created_at=time.time(), node_name=node,
               phase=phase, interfaces=[VMIInterface(name="default", ip_address=ip)] if ip else [])


def doc(value: Any, **change: Any) -> bytes:
    """A value as JSON with fields changed behind the validators' back."""
    obj = json.loads(msgspec.json.encode(value))
    obj.update(change)
    return json.dumps(obj).encode()


async def raw(store: Store, bucket: str) -> KeyValue:
    return await store.js.key_value(bucket)


async def write_hostile_vmis(kv: KeyValue) -> None:
    for key in HOSTILE_KEYS:
        await kv.put(key, msgspec.json.encode(vmi("x")), validate_keys=False)
    await kv.put("vm1", b"{not json")
    await kv.put("vm2", doc(vmi("vm2"), name="vm2\nlocal-hostname: evil"))
    await kv.put("vm3", doc(vmi("vm3"), uid="../../etc"))


async def collect(source: AsyncIterator[Change[Any]], into: list[Change[Any]]) -> None:
    async for change in source:
        into.append(change)


async def eventually(check: Any) -> None:
    for _ in range(200):  # 10 s
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def stored_value_events(store: Store, count: int) -> list[Event]:
    sub = await store.js.subscribe(subjects.EVENTS_ALL, ordered_consumer=True)
    events: list[Event] = []
    try:
        while len(events) < count:
            msg = await sub.next_msg(timeout=5)
            event = msgspec.json.decode(msg.data, type=Event)
            if event.kind == "StoredValue":
                events.append(event)
    finally:
        await sub.unsubscribe()
    return events


async def test_a_watch_sets_bad_entries_aside_and_goes_on(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    await write_hostile_vmis(await raw(store, subjects.BUCKET_VMIS))
    changes: list[Change[VMI]] = []
    watcher = asyncio.create_task(collect(store.vmis.watch(), changes))
    try:
        good = vmi("good")
        await store.vmis.create("good", good)
        await eventually(lambda: any(c.key == "good" for c in changes))
        # a bad value arriving later, while the watch is live, is set aside just the same
        await (await raw(store, subjects.BUCKET_VMIS)).put("vm4", b'{"name": 7}')
        await store.vmis.create("good2", vmi("good2"))
        await eventually(lambda: any(c.key == "good2" for c in changes))
        assert not watcher.done()
    finally:
        watcher.cancel()
    seen = {c.key: c.value for c in changes}
    assert set(seen) == {"vm1", "vm2", "vm3", "vm4", "good", "good2"}  # no hostile key at all
    assert seen["good"] == good and all(seen[k] is None for k in ("vm1", "vm2", "vm3", "vm4"))
    assert [e.key for e in await store.vmis.items()] == ["good", "good2"]
    assert await store.vmis.get("vm2") is None and await store.vmis.get("/") is None
    events = await stored_value_events(store, len(HOSTILE_KEYS) + 4)
    by_name: dict[str, list[Event]] = {}
    for event in events:
        by_name.setdefault(event.name, []).append(event)
    assert sorted(by_name) == ["unsafe-key", "vm1", "vm2", "vm3", "vm4"]
    assert len(by_name["unsafe-key"]) == len(HOSTILE_KEYS)  # once each, though read several times
    assert "'/etc/passwd'" in " ".join(e.message for e in by_name["unsafe-key"])
    assert "does not decode" in by_name["vm1"][0].message and "uid" in by_name["vm3"][0].message
    logged = capsys.readouterr().out
    assert logged.count("stored value set aside") == len(HOSTILE_KEYS) + 4


async def test_the_scheduler_goes_on_past_hostile_vms_and_nodes(store: Store) -> None:
    vms, nodes = await raw(store, subjects.BUCKET_VMS), await raw(store, subjects.BUCKET_NODES)
    good_vm = VM(spec=VMSpec(name="good", run_strategy=RunStrategy.ALWAYS), created_at=time.time())
    await vms.put("/", msgspec.json.encode(good_vm), validate_keys=False)
    await vms.put("evil", doc(VM(spec=VMSpec(name="evil"), created_at=1.0), spec={"name": "evil\n"}))
    node = Node(name="node1", cpus=4, memory=2**32, kvm=False, heartbeat=time.time(), started_at=time.time(),
                address="10.99.0.1", pod_cidr="10.244.0.0/24")
    await nodes.put("node0", doc(msgspec.structs.replace(node, name="node0"), podCidr="default"))
    await nodes.put("/", msgspec.json.encode(node), validate_keys=False)
    scheduler = Scheduler(store)
    await scheduler.start()
    try:
        await store.nodes.put("node1", node)
        await store.vms.create("good", good_vm)

        async def bound() -> bool:
            entry = await store.vmis.get("good")
            return entry is not None and entry.value.node_name == "node1"

        deadline = time.monotonic() + 15
        while not await bound():
            assert time.monotonic() < deadline, "the good VM was never scheduled"
            await asyncio.sleep(0.1)
        assert not any(t.done() for t in scheduler._tasks)
        assert [e.key for e in await store.vmis.items()] == ["good"]  # nothing for "/" or "evil"
        # the node whose pod CIDR is "default" is no node, and never a route
        assert [e.key for e in await store.nodes.items()] == ["node1"]
        routes = pod_routes([e.value for e in await store.nodes.items()], "node2", None)
        assert routes == {IPv4Network("10.244.0.0/24"): IPv4Address("10.99.0.1")}
    finally:
        await scheduler.stop()


def nft_check(script: str) -> int:
    assert shutil.which("unshare") and shutil.which("nft")
    return subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=script, capture_output=True, text=True,
                          check=False, timeout=30).returncode


async def test_the_handler_never_acts_on_a_hostile_entry(store: Store, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    state = tmp_path / "state" / "nodes" / "node1"
    (state / "vmis" / "other").mkdir(parents=True)
    node = Node(name="node1", cpus=2, memory=2**31, kvm=False, heartbeat=time.time(), started_at=time.time())
    launchers = Launchers(NodePaths(state, tmp_path / "logs"), node="node1", nats_url="nats://x",
                          netns_prefix="vbtest", kvm=False)
    agent = Agent(store, node, launchers, PodNetwork(store, "node1", None, IPv4Network("10.244.0.0/24"), FakeNetlink()),
                  NodeApiClient(store.nc, "node1"))
    kicked: list[str] = []
    monkeypatch.setattr(agent.queue, "kick", kicked.append)
    await write_hostile_vmis(await raw(store, subjects.BUCKET_VMIS))
    exposures = await raw(store, subjects.BUCKET_EXPOSURES)
    await exposures.put("nodeport-tcp-30080", doc(Exposure(vm="good", port=80, node_port=30080),
                                                  protocol="tcp dport 1 accept; flush ruleset"))
    await exposures.put("nodeport-tcp-30081", doc(Exposure(vm="good", port=80, node_port=30081), port="80; x"))
    # the handler watches the leader's copies of its VMIs: hostile ones there too, one filed under
    # node1 though it names node2, one not JSON, one with a hostile key
    copies = await raw(store, subjects.node_vmis_bucket("node1"))
    await copies.put("node1.vm5", b"{not json")
    await copies.put("node1.vm6", msgspec.json.encode(NodeVmi(vmi=vmi("vm6", node="node2"), revision=1)))
    await copies.put("node1.-rf", msgspec.json.encode(NodeVmi(vmi=vmi("x"), revision=1)), validate_keys=False)
    mirror = asyncio.create_task(NodeVmiMirror(store).run())
    watcher = asyncio.create_task(agent._watch())
    try:
        await store.vmis.create("good", vmi("good", phase=Phase.RUNNING, ip="10.244.0.5"))
        await eventually(lambda: "good" in kicked)
        assert not watcher.done()
    finally:
        watcher.cancel()
        mirror.cancel()
    assert set(kicked) <= {"vm1", "vm2", "vm3", "vm5", "vm6", "good"}
    for name in set(kicked) - {"good"}:  # what a kick would do: the entry reads as gone
        await agent.reconcile(name)
    assert (outside / "keep").read_text() == "precious" and (state / "vmis" / "other").is_dir()
    # node ports: only the good exposure becomes a rule, and the script is one nft accepts
    await store.bucket(subjects.BUCKET_EXPOSURES, Exposure).create(
        "nodeport-tcp-30082", Exposure(vm="good", port=80, node_port=30082))
    applied: list[str] = []
    monkeypatch.setattr(nftables, "apply", lambda script, netns: applied.append(script))
    await NodePorts(store, "node1", None).sync()
    assert len(applied) == 1 and "flush" not in applied[0] and "30080" not in applied[0]
    assert "tcp dport 30082 dnat to 10.244.0.5:80" in applied[0]
    assert nft_check(applied[0]) == 0


async def test_the_cli_watch_and_events_skip_what_does_not_decode(store: Store,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    await write_hostile_vmis(await raw(store, subjects.BUCKET_VMIS))
    await store.nc.publish(subjects.event("VirtualMachine", "x"), b"{not an event")
    await store.emit(Event(kind="VirtualMachine", name="good", reason="Exposed", message="m", timestamp=1.0))
    client = ApiClient(store.nc)
    shown: list[tuple[str, VMI | None]] = []
    watcher = asyncio.create_task(client.watch_vmis(lambda key, value: shown.append((key, value))))
    try:
        await store.vmis.create("good", vmi("good"))
        await eventually(lambda: any(key == "good" for key, _ in shown))
    finally:
        watcher.cancel()
    assert [key for key, _ in shown] == ["good"]
    events: list[Event] = []
    await client.events(False, events.append)
    assert [e.name for e in events if e.kind == "VirtualMachine"] == ["good"]
    assert "does not decode; skipped" in capsys.readouterr().err
