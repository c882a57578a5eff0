"""Node registration at cluster scale, on a real nats-server: past 256 nodes each still gets a node
network of its own, a node registering again keeps its network, and registrations racing for the
same free network all end with different ones."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network

import msgspec
import pytest

from proto import subjects
from proto.errors import ApiError, Code
from proto.nodeapi import VERB_REGISTER, Registration
from proto.state import Node
from scheduler.nodeapi import NodeApi, release_node_network
from servicekit import informer
from servicekit.store import Store
from tests.consumers import consumers_made

pytestmark = pytest.mark.integration


async def register(api: NodeApi, name: str, address: str | None = None) -> Node:
    body = msgspec.json.encode(Registration(cpus=2, memory=2**30, kvm=False, address=address))
    return await api.register(subjects.nodeapi(name, VERB_REGISTER), body)


async def test_three_hundred_nodes_each_get_a_network_and_keep_it(store: Store) -> None:
    api = NodeApi(store)
    cidrs = [IPv4Network((await register(api, f"n{i}")).pod_cidr or "") for i in range(300)]
    assert len(set(cidrs)) == 300  # no two nodes share one
    assert cidrs[0] == IPv4Network("10.244.0.0/24") and cidrs[255] == IPv4Network("10.244.255.0/24")
    assert cidrs[256] == IPv4Network("10.245.0.0/24")  # the 257th node: the old /16 had no room for it
    assert (await register(api, "n7")).pod_cidr == str(cidrs[7])  # registering again changes nothing
    assert (await register(api, "n299")).pod_cidr == str(cidrs[299])


async def test_racing_registrations_each_end_with_their_own_network(store: Store) -> None:
    apis = [NodeApi(store) for _ in range(3)]  # three control-plane replicas answering at once
    nodes = await asyncio.gather(*(register(apis[i % 3], f"r{i}") for i in range(30)))
    assert len({n.pod_cidr for n in nodes}) == 30


async def test_an_address_in_use_is_refused_from_the_watched_records_too(store: Store) -> None:
    seen: list[Node] = []
    api = NodeApi(store, nodes=lambda: seen)
    seen.append(await register(api, "a", "10.99.0.11"))
    with pytest.raises(ApiError) as taken:
        await register(api, "b", "10.99.0.11")
    assert taken.value.code is Code.CONFLICT and taken.value.field == "address"
    assert await store.nodes.get("b") is None  # refused: nothing written
    assert (await register(api, "a", "10.99.0.11")).address == "10.99.0.11"  # its own address again



async def test_a_node_retrying_its_registration_while_the_first_is_in_flight_is_registered(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # the node's request timed out on its side and it asked again: the retry writes the record
    # between this registration's read and its write; this one is answered all the same
    api = NodeApi(store)
    read = store.nodes.get
    raced: list[str] = []

    async def read_then_the_retry_writes(key: str) -> object:
        entry = await read(key)
        if not raced:
            raced.append(key)
            await store.nodes.put(key, Node(name=key, cpus=2, memory=2**30, kvm=False, heartbeat=1.0,
                                            started_at=1.0, pod_cidr="10.244.0.0/24"))
        return entry

    monkeypatch.setattr(store.nodes, "get", read_then_the_retry_writes)
    node = await register(api, "slow")
    assert raced == ["slow"] and node.pod_cidr == "10.244.0.0/24"
    stored = await read("slow")
    assert stored is not None and stored.value == node and node.started_at == 1.0  # its first start kept


async def test_registrations_read_the_claims_once_not_once_each(store: Store) -> None:
    # each registration read every claim (a consumer made on the server and every claim sent): a
    # thousand nodes registering were a million claims read; now the process's watch has them
    api = NodeApi(store)
    await register(api, "first")
    async with consumers_made(store.nc) as made:
        cidrs = [(await register(api, f"m{i}")).pod_cidr for i in range(20)]
    # at most the watch's own: once it has the current claims it goes on from a sequence, on a consumer
    # of its own (servicekit.kvwatch), which may come as these run
    assert len([c for c in made if c.startswith(subjects.kv_stream(subjects.BUCKET_IPAM) + ".")]) <= 1
    assert cidrs == [f"10.244.{i}.0/24" for i in range(1, 21)]  # the lowest free ones, in turn


async def test_claims_the_watch_has_not_heard_of_are_not_taken_again(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # another replica's claims, made while this process's watch of them was down: the create that
    # loses to one notes whose it is, and a node's own claim made elsewhere is not overwritten
    api = NodeApi(store)
    assert (await register(api, "a")).pod_cidr == "10.244.0.0/24"
    watch = informer.shared(store, api.cidrs, subjects.IPAM_NODE_CIDRS)
    await watch.stop()  # its cache stays as it was
    monkeypatch.setattr(watch, "start", lambda: None)  # and is not watched again
    await api.cidrs.create(subjects.ipam_node_cidr(1), "elsewhere")
    await api.cidrs.create(subjects.ipam_node_cidr(2), "c")
    b = await register(api, "b")
    assert b.pod_cidr not in ("10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24")
    c = await register(api, "c")  # the lowest free one was its own: the lost create says so
    assert c.pod_cidr == "10.244.2.0/24"
    assert (await register(api, "a")).pod_cidr == "10.244.0.0/24"
    assert (await register(api, "c")).pod_cidr == c.pod_cidr
    held = {e.key: e.value for e in await api.cidrs.items()}
    assert held["nodecidr.1"] == "elsewhere" and held["nodecidr.2"] == "c" and list(held.values()).count("b") == 1


async def test_a_deleted_nodes_network_is_given_back_and_claimed_afresh(store: Store) -> None:
    """As Kubernetes' node IPAM releases a deleted Node's podCIDR: a cluster whose nodes come and go
    does not run out of node networks. The process that made the claim does not hand it out again from
    its own memory once it is gone: a node registering again claims one for real."""
    api = NodeApi(store)
    a = await register(api, "a")
    assert a.pod_cidr == "10.244.0.0/24" and (await register(api, "b")).pod_cidr == "10.244.1.0/24"
    await store.bucket(subjects.BUCKET_IPAM, dict[str, str]).put(subjects.ipam_pod_ips("a"), {"vm1": "10.244.0.2"})
    await store.nodes.delete("a")  # as node.delete does (scheduler.nodemaintenance), then:
    await release_node_network(store, "a", a.pod_cidr)
    held = {e.key: e.value for e in await api.cidrs.items()}
    assert "nodecidr.0" not in held and held["nodecidr.1"] == "b"
    assert await api.cidrs.get(subjects.ipam_pod_ips("a")) is None  # its pod IPs went with it
    await release_node_network(store, "b", "10.244.0.0/24")  # not b's: nothing given back
    assert (await api.cidrs.get("nodecidr.1")) is not None
    again = await register(api, "a")  # this process made a's claim once: it is claimed anew, in the bucket
    assert again.pod_cidr == "10.244.0.0/24"
    entry = await api.cidrs.get("nodecidr.0")
    assert entry is not None and entry.value == "a"
    await store.nodes.delete("a")
    await release_node_network(store, "a", again.pod_cidr)
    watch = informer.shared(store, api.cidrs, subjects.IPAM_NODE_CIDRS)
    for _ in range(100):  # this process hears it given back (no read of every claim per registration)
        if watch.seen > entry.revision and "nodecidr.0" not in {e.key for e in await watch.items()}:
            break
        await asyncio.sleep(0.02)
    assert (await register(api, "c")).pod_cidr == "10.244.0.0/24"  # the lowest free one, given back
