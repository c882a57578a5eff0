"""Each role tries what it must not, against a real nats-server with virtbus's generated config:
the server refuses it (a permissions violation, nothing written), and what the role may do works."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from proto import subjects
from proto.api import decode_reply, encode
from proto.errors import ApiError, Code
from proto.nodeapi import Registration, StatusReport
from proto.spec import VMSpec
from proto.state import VM, VMI, Node, Phase
from scheduler.nodeapi import NodeApi
from servicekit import credentials
from servicekit.endpoints import serve
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store
from tests.conftest import NatsServer, try_connect

pytestmark = pytest.mark.integration


class Client_:
    """A connection as one user that records what the server refused."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def connect(self, url: str, seed: str, inbox: str | None = None) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        extra = {"inbox_prefix": inbox} if inbox else {}
        self.nc = await nats.connect(url, nkeys_seed=seed, error_cb=on_error, allow_reconnect=False, **extra)
        return self.nc

    async def refused(self, subject: str) -> bool:
        """Publish, then wait for the server's verdict on it."""
        before = len(self.errors)
        assert self.nc is not None
        await self.nc.publish(subject, b"{}")
        await self.nc.flush()
        for _ in range(8):
            if any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in self.errors[before:]):
                return True
            await asyncio.sleep(0.025)
        return False


@pytest.fixture
async def as_user(nats_server: NatsServer) -> AsyncIterator[object]:
    clients: list[Client_] = []

    async def connect(user: str, inbox: str | None = None) -> Client_:
        c = Client_()
        await c.connect(nats_server.url, nats_server.creds(user), inbox)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        if c.nc is not None:
            await c.nc.close()


def test_anonymous_and_unknown_keys_are_refused(nats_server: NatsServer) -> None:
    assert "authorization violation" in try_connect(nats_server.url).lower()
    stranger = nats_server.creds_dir.parent / "stranger.nk"
    stranger.write_bytes(credentials.new_seed())
    assert "authorization violation" in try_connect(nats_server.url, str(stranger)).lower()
    assert try_connect(nats_server.url, nats_server.creds("viewer")).strip() == "connected"


async def test_viewer_reads_but_changes_nothing(nats_server: NatsServer, store: Store, as_user) -> None:  # type: ignore[no-untyped-def]
    viewer = await as_user("viewer")
    for subject in (subjects.api("vm", "stop"), subjects.api("vm", "create"), subjects.api("vm", "delete"),
                    subjects.api("vm", "pause"), subjects.api("vm", "unpause"), subjects.api("vm", "soft-reboot"),
                    subjects.api("vmi", "pause"), subjects.api("node", "cordon"), subjects.api("node", "uncordon"),
                    subjects.api("vmi", "evict"), subjects.api("image", "delete"), subjects.api("kubevirt", "apply"),
                    "$KV.vms.testvm",
                    f"$KV.{subjects.BUCKET_CONFIG}.{subjects.CONFIG_KUBEVIRT}", "$O.images.C.x",
                    subjects.console_in("node1", "testvm"), subjects.nodeapi("node1", "status")):
        assert await viewer.refused(subject), subject
    assert not await viewer.refused(subjects.api("vm", "list"))
    # reading state works: the viewer opens the vms bucket and sees what admin wrote
    await store.vms.put("testvm", VM(spec=VMSpec(name="testvm", memory="128Mi"), created_at=time.time()))
    assert viewer.nc is not None
    kv = await viewer.nc.jetstream().key_value(subjects.BUCKET_VMS)
    entry = await kv.get("testvm")
    assert entry.value is not None and b"128Mi" in entry.value
    assert await viewer.refused("$KV.vms.testvm")
    stored = await store.vms.get("testvm")
    assert stored is not None and stored.value.spec.memory == "128Mi"


async def test_a_node_writes_only_its_own_record(nats_server: NatsServer, store: Store, as_user) -> None:  # type: ignore[no-untyped-def]
    node1 = await as_user("node-node1", subjects.inbox_prefix("node", "node1"))
    for subject in ("$KV.vms.testvm", "$KV.vmis.testvm", "$KV.nodes.node2", "$KV.ipam.nodecidr.0",
                    "$KV.ipam.podips.node2", "$KV.networks.x", "$KV.exposures.x", "$O.images.C.x",
                    f"$KV.{subjects.BUCKET_CONFIG}.{subjects.CONFIG_KUBEVIRT}",
                    "$O.images.M.x", subjects.nodeapi("node2", "status"),
                    f"$KV.{subjects.BUCKET_VMI_LEASES}.{subjects.vmi_lease('node2', 'testvm')}",
                    subjects.stats("node2", "testvm"),
                    subjects.api("vm", "list"), "$JS.API.STREAM.DELETE.KV_vms",
                    "$JS.API.STREAM.PURGE.VIRTBUS_CONSOLE", subjects.event("VirtualMachine", "testvm"),
                    subjects.console_out("node2", "testvm"), subjects.console_in("node2", "testvm")):
        assert await node1.refused(subject), subject
    for subject in ("$KV.nodes.node1", "$KV.ipam.podips.node1", subjects.nodeapi("node1", "status"),
                    f"$KV.{subjects.BUCKET_VMI_LEASES}.{subjects.vmi_lease('node1', 'testvm')}",
                    subjects.stats("node1", "testvm"), subjects.console_out("node1", "testvm")):
        assert not await node1.refused(subject), subject
    # and it cannot listen to the API's requests, nor to another node's replies
    before = len(node1.errors)
    assert node1.nc is not None
    await node1.nc.subscribe(subjects.API_ALL)
    await node1.nc.subscribe(f"{subjects.inbox_prefix('node', 'node2')}.>")
    await node1.nc.subscribe(subjects.console_in("node2", "testvm"))  # another node's keystrokes
    await node1.nc.subscribe(subjects.console_in("node1", "testvm"))  # its own: allowed
    await node1.nc.flush()
    await asyncio.sleep(0.3)
    assert sum("permissions violation" in e.lower() for e in node1.errors[before:]) == 3


async def test_snapshot_content_nodes_add_and_nobody_but_admin_purges(as_user) -> None:  # type: ignore[no-untyped-def]
    """A node uploads the snapshots of its volumes (chunks and metadata of the store volumesnapshots);
    it reports their progress only on its own node API subjects, and purges or deletes nothing; the
    control plane marks a deleted snapshot's object; the viewer writes none of it."""
    store = f"$O.{subjects.OBJECT_STORE_SNAPSHOTS}"
    node1 = await as_user("node-node1", subjects.inbox_prefix("node", "node1"))
    for subject in (f"{store}.C.abc", f"{store}.M.abc", subjects.nodeapi("node1", "snapshot-progress"),
                    subjects.nodeapi("node1", "volume-progress")):
        assert not await node1.refused(subject), subject
    for subject in (subjects.nodeapi("node2", "snapshot-progress"), subjects.nodeapi("node2", "volume-progress"),
                    f"$JS.API.STREAM.PURGE.{subjects.object_stream(subjects.OBJECT_STORE_SNAPSHOTS)}",
                    f"$JS.API.STREAM.DELETE.{subjects.object_stream(subjects.OBJECT_STORE_SNAPSHOTS)}",
                    f"$KV.{subjects.BUCKET_SNAPSHOTS}.s1", f"$KV.{subjects.BUCKET_VOLUMES}.data"):
        assert await node1.refused(subject), subject
    control = await as_user("control", subjects.inbox_prefix("control"))
    assert not await control.refused(f"{store}.M.abc")
    assert await control.refused(f"{store}.C.abc")
    viewer = await as_user("viewer")
    assert await viewer.refused(f"{store}.C.abc") and await viewer.refused(subjects.api("snapshot", "create"))
    assert not await viewer.refused(subjects.api("snapshot", "list"))


async def test_the_control_plane_cannot_write_image_content(as_user) -> None:  # type: ignore[no-untyped-def]
    control = await as_user("control", subjects.inbox_prefix("control"))
    assert await control.refused("$O.images.C.abc")
    assert not await control.refused("$KV.vms.x")


async def test_a_node_reports_only_on_its_own_vmis(nats_server: NatsServer, store: Store) -> None:
    """NodeRestriction: the control plane applies node1's report on node1's VMI, refuses node2's."""
    control = await Store.connect(nats_server.url, "control", creds=nats_server.creds("control"),
                                  inbox=subjects.inbox_prefix("control"))
    service = await serve(control.nc, name="virtbus-nodeapi", version="0.1.0", description="node api", queue="q",
                          endpoints=NodeApi(control).endpoints())
    nodes = {n: await nats.connect(nats_server.url, nkeys_seed=nats_server.creds(f"node-{n}"),
                                   inbox_prefix=subjects.inbox_prefix("node", n)) for n in ("node1", "node2")}
    try:
        reg = Registration(cpus=2, memory=2**30, kvm=False, address="10.99.0.11")
        record = await NodeApiClient(nodes["node1"], "node1").register(reg, patience=5)
        assert record.pod_cidr == "10.244.0.0/24" and record.name == "node1"
        with pytest.raises(ApiError) as taken:  # another node may not claim node1's address
            await NodeApiClient(nodes["node2"], "node2").register(reg, patience=5)
        assert taken.value.code is Code.CONFLICT
        await store.vmis.create("testvm", VMI(name="testvm", uid="u1", spec=VMSpec(name="testvm"), created_at=0.0,
                                               phase=Phase.SCHEDULED, node_name="node1"))
        with pytest.raises(ApiError) as forbidden:
            await NodeApiClient(nodes["node2"], "node2").report(
                StatusReport(vmi="testvm", uid="u1", phase=Phase.FAILED, reason="lies"), patience=5)
        assert forbidden.value.code is Code.FORBIDDEN
        assert (await store.vmis.require("testvm", "VMI")).value.phase is Phase.SCHEDULED
        # a node may not move a VMI back to Scheduled or anywhere but Running/Succeeded/Failed
        msg = await nodes["node1"].request(subjects.nodeapi("node1", "status"),
                                           encode(StatusReport(vmi="testvm", uid="u1", phase=Phase.PENDING)), timeout=5)
        with pytest.raises(ApiError) as invalid:
            decode_reply(msg.data, Node)
        assert invalid.value.code is Code.INVALID
        reply = await NodeApiClient(nodes["node1"], "node1").report(
            StatusReport(vmi="testvm", uid="u1", phase=Phase.RUNNING), patience=5)
        assert reply.applied and reply.phase is Phase.RUNNING
        assert (await store.vmis.require("testvm", "VMI")).value.phase is Phase.RUNNING
    finally:
        for nc in nodes.values():
            await nc.close()
        await service.stop()
        await control.close()


async def test_viewers_look_admins_type_and_each_node_serves_only_its_own_screens(as_user) -> None:  # type: ignore[no-untyped-def]
    session = "0123456789abcdef"
    viewer = await as_user("viewer")
    for subject in (subjects.vnc_open("node1", "testvm"), subjects.vnc_session("node1", "testvm", session, "up")):
        assert await viewer.refused(subject), subject  # a full session carries keys: not a viewer's
    for subject in (subjects.vnc_open("node1", "testvm", view_only=True), subjects.vnc_screenshot("node1", "testvm"),
                    subjects.vnc_session("node1", "testvm", session, "up", view_only=True)):
        assert not await viewer.refused(subject), subject
    node1 = await as_user("node-node1", subjects.inbox_prefix("node", "node1"))
    assert await node1.refused(subjects.vnc_session("node2", "testvm", session, "down"))
    assert not await node1.refused(subjects.vnc_session("node1", "testvm", session, "down"))
    admin = await as_user("admin")
    assert not await admin.refused(subjects.vnc_open("node1", "testvm"))
    before = {"node1": len(node1.errors), "viewer": len(viewer.errors)}
    assert node1.nc is not None and viewer.nc is not None
    await node1.nc.subscribe(subjects.vnc_open("node2", "testvm"))  # another node's screens
    await node1.nc.subscribe(subjects.vnc_session("node2", "testvm", session, "up"))
    await node1.nc.subscribe(subjects.vnc_open("node1", "testvm"))  # its own: allowed
    await viewer.nc.subscribe(subjects.vnc_session("node1", "testvm", session, "down"))  # an admin's screen
    await viewer.nc.subscribe(subjects.vnc_session("node1", "testvm", session, "down", view_only=True))
    await node1.nc.flush()
    await viewer.nc.flush()
    await asyncio.sleep(0.3)
    assert sum("permissions violation" in e.lower() for e in node1.errors[before["node1"]:]) == 2
    assert sum("permissions violation" in e.lower() for e in viewer.errors[before["viewer"]:]) == 1


async def test_a_node_answers_what_it_is_asked_once_and_nothing_else(as_user) -> None:  # type: ignore[no-untyped-def]
    """A node's response permissions (proto.permissions.NODE_RESPONSES, nats-server's block form):
    it answers a request it was delivered, once; it cannot publish into an inbox it was not asked from."""
    node1 = await as_user("node-node1", subjects.inbox_prefix("node", "node1"))
    viewer = await as_user("viewer")
    assert node1.nc is not None and viewer.nc is not None
    answers = 0

    async def answer(msg: Msg) -> None:
        nonlocal answers
        assert node1.nc is not None
        for _ in range(2):  # the second answer to one request is refused
            await node1.nc.publish(msg.reply, b'{"node": "node1"}')
            answers += 1

    await node1.nc.subscribe(subjects.node_info("node1"), cb=answer)
    await node1.nc.flush()
    inbox = viewer.nc.new_inbox()
    got: list[bytes] = []

    no_responders: list[Msg] = []

    async def receive(msg: Msg) -> None:
        if (msg.headers or {}).get("Status") == "503":  # the request met no subscription (yet): asked again
            no_responders.append(msg)
        else:
            got.append(msg.data)

    sub = await viewer.nc.subscribe(inbox, cb=receive)
    for _ in range(3):  # once a loaded CI box answered the first request "no responders", flush or not
        await viewer.nc.publish(subjects.node_info("node1"), b"", reply=inbox)
        for _ in range(40):
            if (answers == 2 and got) or no_responders:
                break
            await asyncio.sleep(0.025)
        if not no_responders:
            break
        no_responders.clear()
    await node1.nc.flush()
    await asyncio.sleep(0.3)
    assert got == [b'{"node": "node1"}']
    assert any("permissions violation" in e.lower() for e in node1.errors)
    await sub.unsubscribe()
    assert await node1.refused(viewer.nc.new_inbox())  # an inbox it was never asked from
