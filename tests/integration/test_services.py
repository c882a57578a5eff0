"""Services and Endpoints against a real nats-server, through the API as any NATS client sends it:
the article's manifests applied as they are, virtctl expose, Endpoints following a VM's instance as it
runs, moves and stops, and claims (addresses, node ports) that never collide and are given back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats.js.errors
import pytest
import yaml

from proto import subjects
from proto.state import VMI, Phase, VMIInterface
from scheduler.endpointsync import EndpointsController
from servicekit.store import Store
from tests.conftest import REPO
from tests.consumers import consumers_made

pytestmark = pytest.mark.integration


async def call(store: Store, kind: str, verb: str, body: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await store.nc.request(subjects.api(kind, verb), data, timeout=10)
    return json.loads(reply.data)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < 10, what
        await asyncio.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
async def controller(api: Store) -> AsyncIterator[Store]:
    task = asyncio.create_task(EndpointsController(api).run())
    try:
        yield api
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def vm_manifest(name: str, labels: dict[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "testvm-masquerade.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["template"].setdefault("metadata", {})["labels"] = labels
    return dict(doc)


async def run_instance(store: Store, name: str, ip: str, node: str = "node1") -> None:
    """What a node reports of a running instance: Running, on its node, with its pod address."""
    vm = await store.vms.require(name, "VM")
    await store.vmis.put(name, VMI(name=name, uid=f"uid-{name}-{node}", spec=vm.value.spec, created_at=time.time(),
                                   phase=Phase.RUNNING, node_name=node,
                                   interfaces=[VMIInterface(name="default", ip_address=ip)]))


async def addresses(store: Store, name: str) -> list[str]:
    got = await call(store, "endpoints", "get", {"name": name})
    return [a["ip"] for s in got.get("item", {}).get("subsets", []) for a in s["addresses"]]


async def test_endpoints_follow_the_selected_vm_as_it_runs_moves_and_stops(controller: Store) -> None:
    store = controller
    assert "item" in await call(store, "vm", "create", vm_manifest("win10", {"kubevirt.io/domain": "win10"}))
    assert "item" in await call(store, "vm", "create", vm_manifest("other", {"kubevirt.io/domain": "linux"}))
    made = await call(store, "service", "apply", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "win10-http"},
        "spec": {"type": "NodePort", "selector": {"kubevirt.io/domain": "win10"},
                 "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}})
    service = made["item"]["service"]
    assert service["clusterIp"].startswith("10.96.") and 30000 <= service["ports"][0]["nodePort"] <= 32767
    await run_instance(store, "other", "10.244.1.7")
    await run_instance(store, "win10", "10.244.1.5")

    async def listed(ips: list[str]) -> bool:
        return await addresses(store, "win10-http") == ips
    await until(lambda: listed(["10.244.1.5"]), "the running win10 instance is its endpoint")
    await store.vmis.delete("win10")  # its instance ends, and runs again on the other node
    await until(lambda: listed([]), "no endpoint while it runs nowhere")
    await run_instance(store, "win10", "10.244.2.9", node="node2")
    followed = await until(lambda: listed(["10.244.2.9"]), "the endpoint follows it to node2")
    assert followed < 2.0
    entry = await store.vmis.require("win10", "VMI")
    await store.vmis.put("win10", msgspec.structs.replace(entry.value, stop_requested=True))
    await until(lambda: listed([]), "a stopping instance takes no more traffic")
    assert "message" in await call(store, "service", "delete", {"name": "win10-http"})
    await until(lambda: _gone(store, "win10-http"), "its endpoints go with the Service")


async def _gone(store: Store, name: str) -> bool:
    reply = await call(store, "endpoints", "get", {"name": name})
    return bool(reply.get("error", {}).get("code") == "NotFound")


async def test_virtctl_expose_and_node_ports_never_shared_with_a_vms_own(controller: Store) -> None:
    store = controller
    await call(store, "vm", "create", vm_manifest("plain", {}))
    own = await call(store, "vm", "expose", {"name": "plain", "port": 22, "nodePort": 30022})
    assert own["nodePort"] == 30022
    clash = await call(store, "vm", "expose-service", {"kind": "vm", "name": "plain", "serviceName": "plain-ssh",
                                                       "port": 22, "type": "NodePort"})
    assert clash["item"]["service"]["ports"][0]["nodePort"] != 30022
    assert clash["item"]["service"]["selector"] == {"vm.kubevirt.io/name": "plain"}
    taken = await call(store, "service", "apply", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "taken"},
        "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 1, "nodePort": 30022}]}})
    assert taken["error"]["code"] == "AlreadyExists" and taken["error"]["field"] == "spec.ports[0].nodePort"
    assert (await call(store, "service", "get", {"name": "taken"}))["error"]["code"] == "NotFound"
    again = await call(store, "vm", "expose-service", {"kind": "vm", "name": "plain", "serviceName": "plain-ssh",
                                                       "port": 22})
    assert again["error"]["code"] == "AlreadyExists" and again["error"]["field"] == "serviceName"
    bad = await call(store, "vm", "expose-service", {"kind": "vm", "name": "plain", "serviceName": "x",
                                                     "port": 22, "type": "ExternalName"})
    assert bad["error"]["field"] == "type"
    v6 = await call(store, "vm", "expose-service", {"kind": "vm", "name": "plain", "serviceName": "x", "port": 22,
                                                    "ipFamily": "IPv6"})
    assert v6["error"]["field"] == "ipFamily", "virtctl's flags are named as the user gave them"
    ext = await call(store, "vm", "expose-service", {"kind": "vm", "name": "plain", "serviceName": "ext", "port": 22,
                                                     "externalIp": "192.168.100.80", "ipFamily": "IPv4",
                                                     "ipFamilyPolicy": "SingleStack"})
    assert ext["item"]["service"]["externalIps"] == ["192.168.100.80"]
    await call(store, "service", "delete", {"name": "plain-ssh"})
    port = clash["item"]["service"]["ports"][0]["nodePort"]
    reuse = await call(store, "service", "apply", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "reuse"},
        "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 1, "nodePort": port}]}})
    assert reuse["item"]["service"]["ports"][0]["nodePort"] == port, "a deleted Service gives its node port back"


async def test_the_articles_headless_service_with_hand_written_endpoints(controller: Store) -> None:
    store = controller
    mongo = await call(store, "service", "apply", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "mongo", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"port": 27017, "targetPort": 27017}]}})
    assert mongo["item"]["service"]["clusterIp"] == "None"
    ends = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "mongo"},
            "subsets": [{"addresses": [{"ip": "192.168.200.21"}], "ports": [{"port": 27017}]}]}
    assert "item" in await call(store, "endpoints", "apply", ends)
    await asyncio.sleep(0.5)  # the controller leaves hand-written Endpoints alone
    assert await addresses(store, "mongo") == ["192.168.200.21"]
    await call(store, "service", "apply", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "sel"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}})
    refused = await call(store, "endpoints", "apply", {**ends, "metadata": {"name": "sel"}})
    assert refused["error"]["code"] == "Invalid", "a Service with a selector has its Endpoints kept by virtbus"
    # deleting the Service deletes its Endpoints, as in Kubernetes, those written by hand too
    await call(store, "service", "delete", {"name": "mongo"})
    assert (await call(store, "endpoints", "get", {"name": "mongo"}))["error"]["code"] == "NotFound"


async def test_bad_input_gets_a_typed_error_and_changes_nothing(api: Store) -> None:
    store = api
    for body, code in [(b"{not json", "BadRequest"),
                       ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"bogus": 1}},
                        "Invalid"),
                       ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x;rm -rf /"},
                         "spec": {"ports": [{"port": 80}]}}, "Invalid"),
                       ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                         "spec": {"clusterIP": "10.96.0.0", "ports": [{"port": 80}]}}, "Invalid")]:
        reply = await call(store, "service", "apply", body)
        assert reply["error"]["code"] == code, reply
    assert (await call(store, "service", "list", {}))["items"] == []
    assert await address_claims(store) == []
    first = await call(store, "service", "apply", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                                                   "spec": {"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}})
    assert first["item"]["service"]["clusterIp"] == "10.96.5.5"
    second = await call(store, "service", "apply", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b"},
                                                    "spec": {"clusterIP": "10.96.5.5", "ports": [{"port": 80}]}})
    assert second["error"]["code"] == "AlreadyExists" and second["error"]["field"] == "spec.clusterIP"
    moved = await call(store, "service", "apply", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                                                   "spec": {"clusterIP": "10.96.6.6", "ports": [{"port": 80}]}})
    assert moved["error"]["field"] == "spec.clusterIP", "a Service's address is immutable"
    assert await address_claims(store) == ["svcip.10-96-5-5"]
    await call(store, "service", "delete", {"name": "a"})
    assert await address_claims(store) == [], "a deleted Service gives its address back"


async def address_claims(store: Store) -> list[str]:
    try:
        keys = await store.raw[subjects.BUCKET_IPAM].keys()
    except nats.js.errors.NoKeysError:
        return []
    return sorted(k for k in keys if k.startswith("svcip."))


async def test_a_load_balancer_takes_a_free_floating_ip_and_gives_it_back(api: Store) -> None:
    store = api
    lb: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                          "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    pending = await call(store, "service", "apply", lb)
    assert pending["item"]["service"].get("loadBalancerIp") is None  # no floating IP yet: <pending>
    await call(store, "service", "delete", {"name": "lb"})
    assert "item" in await call(store, "network", "apply", json.loads(json.dumps({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": "provider"},
        "spec": {"config": json.dumps({"cniVersion": "0.3.1", "type": "bridge", "bridge": "prov0",
                                       "ipam": {"type": "host-local", "subnet": "192.168.200.0/24"}})}})))
    for address in ("192.168.200.30", "192.168.200.31"):
        assert "address" in await call(store, "fip", "create", {"address": address, "network": "provider"})
    await call(store, "vm", "create", vm_manifest("vm1", {}))
    await call(store, "fip", "attach", {"address": "192.168.200.30", "vm": "vm1"})
    made = await call(store, "service", "apply", lb)
    assert made["item"]["service"]["loadBalancerIp"] == "192.168.200.31", "the free one, not the VM's"
    fips = {f["address"]: f for f in (await call(store, "fip", "list", {}))["items"]}
    assert fips["192.168.200.31"]["service"] == "lb"
    refused = await call(store, "fip", "delete", {"address": "192.168.200.31"})
    assert refused["error"]["code"] == "Conflict", "a Service's address is not deleted under it"
    other = await call(store, "service", "apply", {**lb, "metadata": {"name": "lb2"},
                                                   "spec": {**lb["spec"], "loadBalancerIP": "192.168.200.31"}})
    assert other["error"]["field"] == "spec.loadBalancerIP" and other["error"]["code"] == "AlreadyExists"
    assert (await call(store, "service", "get", {"name": "lb2"}))["error"]["code"] == "NotFound"
    again = await call(store, "service", "apply", lb)  # applied again: the same address
    assert again["item"]["service"]["loadBalancerIp"] == "192.168.200.31"
    await call(store, "service", "delete", {"name": "lb"})
    fips = {f["address"]: f for f in (await call(store, "fip", "list", {}))["items"]}
    assert "service" not in fips["192.168.200.31"], "a deleted Service gives its floating IP back"


async def test_a_replica_set_is_exposed_by_its_templates_labels(api: Store) -> None:
    store = api
    rs = yaml.safe_load((REPO / "examples" / "testvmirs.yaml").read_text())
    assert "item" in await call(store, "vmirs", "apply", rs)
    made = await call(store, "vm", "expose-service", {"kind": "vmirs", "name": rs["metadata"]["name"],
                                                      "serviceName": "rs-http", "port": 80})
    assert made["item"]["service"]["selector"] == rs["spec"]["template"]["metadata"]["labels"]
    missing = await call(store, "vm", "expose-service", {"kind": "vmirs", "name": "nope", "serviceName": "x",
                                                         "port": 80})
    assert missing["error"]["code"] == "NotFound"


async def test_endpoints_follow_vmi_changes_without_reading_buckets_afresh(controller: Store) -> None:
    """What an operator watching nats-server sees while instances come and go: the endpoints
    controller watched each bucket once and synced from its caches. Each sync read the Services,
    the Endpoints and, once a Service selected, every VMI afresh: a consumer made on the server
    per bucket at every VMI change (up to 10 a second in a launch burst)."""
    store = controller
    assert "item" in await call(store, "vm", "create", vm_manifest("web", {"app": "web"}))
    assert "item" in await call(store, "service", "apply", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}})
    await run_instance(store, "web", "10.244.1.2")
    await until(lambda: _listed(store, "web", ["10.244.1.2"]), "the instance is the Service's endpoint")
    await store.nc.flush()
    async with consumers_made(store.nc) as made:
        for i in range(3, 23):  # the instance moves from address to address: a VMI change each
            await run_instance(store, "web", f"10.244.1.{i}")
            await asyncio.sleep(0.15)  # a sync each (they are debounced 0.1 s)
        await until(lambda: _listed(store, "web", ["10.244.1.22"]), "the endpoint follows every move")
    assert made == [], f"consumers made while syncing: {made}"


async def _listed(store: Store, name: str, ips: list[str]) -> bool:
    return await addresses(store, name) == ips
