"""Bad requests over plain NATS get a typed error reply and change nothing that is stored."""

from __future__ import annotations

import json

import pytest
import yaml

from proto import subjects
from proto.state import Exposure, Node
from servicekit.store import Store
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.integration


async def request(store: Store, subject: str, body: bytes) -> dict[str, object]:
    msg = await store.nc.request(subject, body, timeout=5)
    reply = json.loads(msg.data)
    assert isinstance(reply, dict)
    return reply


def seed_testvm() -> dict[str, object]:
    doc = yaml.safe_load((EXAMPLES / "testvm-masquerade.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def with_path(doc: dict[str, object], path: list[str], value: object) -> dict[str, object]:
    node: dict[str, object] = doc
    for key in path[:-1]:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    node[path[-1]] = value
    return doc


BAD = [
    ("malformed JSON", b'{"apiVersion": "kubevirt.io/v1", ', "BadRequest", None),
    ("not an object", b"[1, 2]", "BadRequest", None),
    ("unknown field", json.dumps(with_path(seed_testvm(), ["spec", "template", "spec", "domain", "gpus"], []))
     .encode(), "Invalid", "spec.template.spec.domain.gpus"),
    ("bad quantity", json.dumps(with_path(seed_testvm(), ["spec", "template", "spec", "domain", "resources",
                                                     "requests", "memory"], "lots")).encode(),
     "Invalid", "spec.template.spec.domain.resources.requests.memory"),
    ("impossible size", json.dumps(with_path(seed_testvm(), ["spec", "template", "spec", "domain", "resources",
                                                        "requests", "memory"], "64Ti")).encode(),
     "Invalid", "spec.template.spec.domain.resources.requests.memory"),
    ("name not a DNS-1123 label",
     json.dumps(with_path(seed_testvm(), ["metadata", "name"], "../../etc; rm -rf")).encode(),
     "Invalid", "metadata.name"),
    ("another namespace", json.dumps(with_path(seed_testvm(), ["metadata", "namespace"], "prod")).encode(),
     "Invalid", "metadata.namespace"),
]


@pytest.mark.parametrize(("case", "body", "code", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_create_is_refused_and_stores_nothing(
        api: Store, case: str, body: bytes, code: str, field: str | None) -> None:
    reply = await request(api, subjects.api("vm", "create"), body)
    error = reply["error"]
    assert isinstance(error, dict)
    assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    assert "Traceback" not in str(error["message"])
    assert await api.vms.items() == []
    assert await api.vmis.items() == []


async def test_unknown_secondary_network_is_refused_until_it_exists(api: Store) -> None:
    doc = yaml.safe_load((EXAMPLES / "testvm-2-secondary.yaml").read_text())
    reply = await request(api, subjects.api("vm", "create"), json.dumps(doc).encode())
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == "Invalid"
    assert error["field"] == "spec.template.spec.networks[1].multus.networkName"
    assert "multus-br" in str(error["message"])
    assert await api.vms.items() == []
    nad = yaml.safe_load((EXAMPLES / "multus-br.yaml").read_text())
    assert "error" not in await request(api, subjects.api("network", "apply"), json.dumps(nad).encode())
    assert "error" not in await request(api, subjects.api("vm", "create"), json.dumps(doc).encode())


async def test_good_create_then_bad_requests_change_nothing(api: Store) -> None:
    reply = await request(api, subjects.api("vm", "create"), json.dumps(seed_testvm()).encode())
    assert "error" not in reply, reply
    before = await api.vms.items()
    for subject, body, code in [
        (subjects.api("vm", "create"), json.dumps(seed_testvm()).encode(), "AlreadyExists"),
        (subjects.api("vm", "start"), b'{"name": "nope"}', "NotFound"),
        (subjects.api("vm", "start"), b'{"name": "testvm", "force": true}', "BadRequest"),
        (subjects.api("vm", "stop"), b'{"name": "Bad Name"}', "Invalid"),
        (subjects.api("vm", "delete"), b"{not json", "BadRequest"),
        (subjects.api("vmi", "get"), b'{"name": "testvm"}', "NotFound"),
    ]:
        reply = await request(api, subject, body)
        error = reply.get("error")
        assert isinstance(error, dict) and error["code"] == code, (subject, body, reply)
    assert await api.vms.items() == before
    assert await api.vmis.items() == []


async def test_overlapping_networks_are_refused(api: Store) -> None:
    def nad(name: str, subnet: str) -> bytes:
        config = json.dumps({"cniVersion": "0.3.1", "name": name, "type": "bridge", "bridge": "br-" + name,
                             "ipam": {"type": "host-local", "subnet": subnet}})
        return json.dumps({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                           "metadata": {"name": name}, "spec": {"config": config}}).encode()

    assert "error" not in await request(api, subjects.api("network", "apply"), nad("one", "192.168.100.0/24"))
    for name, subnet, reason in [("two", "192.168.100.128/25", "overlaps network one"),
                                 ("pods", "10.244.7.0/24", "overlaps the pod network")]:
        error = (await request(api, subjects.api("network", "apply"), nad(name, subnet)))["error"]
        assert isinstance(error, dict) and error["code"] == "Invalid" and reason in str(error["message"])
        assert error["field"] == "spec.config.ipam.subnet"
    listed = await request(api, subjects.api("network", "list"), b"{}")
    items = listed["items"]
    assert isinstance(items, list) and [n["name"] for n in items] == ["one"]


async def test_an_oversized_request_gets_an_error_reply_unparsed(api: Store) -> None:
    doc = seed_testvm()
    doc["metadata"]["padding"] = "x" * (600 * 1024)  # type: ignore[index]  # over our cap, under NATS's 1 MiB
    error = (await request(api, subjects.api("vm", "create"), json.dumps(doc).encode()))["error"]
    assert isinstance(error, dict) and error["code"] == "BadRequest" and "at most 512 KiB" in str(error["message"])
    assert await api.vms.items() == []


@pytest.mark.parametrize(("subject", "body", "field"), [
    (subjects.api("vm", "expose"), {"name": "testvm", "port": 80, "protocol": "tcp dport 1 accept; flush ruleset"},
     "protocol"),
    (subjects.api("vm", "expose"), {"name": "testvm\n", "port": 80}, "name"),
    (subjects.api("vm", "expose"), {"name": "testvm", "port": 80, "nodePort": 22}, "nodePort"),
    (subjects.api("vm", "unexpose"), {"name": "/", "port": 80}, "name"),
    (subjects.api("fip", "create"), {"address": "192.168.100.9; flush ruleset", "network": "multus-br"}, "address"),
    (subjects.api("fip", "create"), {"address": "192.168.100.9", "network": "../x"}, "network"),
    (subjects.api("fip", "attach"), {"address": "192.168.100.9", "vm": "-rf"}, "vm"),
    (subjects.api("image", "delete"), {"name": "../../etc/passwd"}, "name"),
])
async def test_hostile_fields_are_invalid_naming_the_field(api: Store, subject: str, body: dict[str, object],
                                                           field: str) -> None:
    assert "error" not in await request(api, subjects.api("vm", "create"), json.dumps(seed_testvm()).encode())
    error = (await request(api, subject, json.dumps(body).encode()))["error"]
    assert isinstance(error, dict) and error["code"] == "Invalid" and error["field"] == field, error
    assert [e.value.spec.name for e in await api.vms.items()] == ["testvm"]
    assert await api.bucket(subjects.BUCKET_EXPOSURES, Exposure).items() == []


async def test_a_network_may_not_hold_a_node_address_nor_use_the_pod_bridge(api: Store) -> None:
    node = Node(name="node1", cpus=1, memory=2**30, kvm=False, heartbeat=0.0, started_at=0.0, address="10.99.0.1")
    await api.nodes.put("node1", node)
    for bridge, subnet, field in [("multus-bridge", "10.99.0.0/24", "spec.config.ipam.subnet"),
                                  ("vbpods", "192.168.5.0/24", "spec.config.bridge"),
                                  ("-bridge", "192.168.5.0/24", "spec.config.bridge")]:
        config = json.dumps({"cniVersion": "0.3.1", "name": "n", "type": "bridge", "bridge": bridge,
                             "ipam": {"type": "host-local", "subnet": subnet}})
        body = json.dumps({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                           "metadata": {"name": "n"}, "spec": {"config": config}}).encode()
        error = (await request(api, subjects.api("network", "apply"), body))["error"]
        assert isinstance(error, dict) and error["code"] == "Invalid" and error["field"] == field, error
    assert (await request(api, subjects.api("network", "list"), b"{}"))["items"] == []
