"""NetworkAttachmentDefinitions over plain NATS (``virtbus.api.network.get|delete``), as kubectl's
``get|delete net-attach-def`` would: read back, refused while an instance or a floating IP is on the
network (naming them), deleted with the addresses VMs kept on it once nothing is."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from proto import subjects
from proto.manifest import load_manifests
from servicekit.store import Bucket, Store
from tests.apirequests import request
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def example(name: str) -> dict[str, Any]:
    docs = load_manifests((REPO / "examples" / name).read_bytes())
    assert len(docs) == 1 and isinstance(docs[0], dict)
    return dict(docs[0])


def vmi_on(network: str) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())
    doc["metadata"] = {"name": "onnet"}
    doc["spec"]["domain"]["devices"]["interfaces"].append({"name": "ext", "bridge": {}})
    doc["spec"]["networks"].append({"name": "ext", "multus": {"networkName": network}})
    return dict(doc)


async def test_a_network_is_read_and_deleted_only_once_nothing_is_on_it(api: Store) -> None:
    assert "item" in await request(api, "network", "apply", example("multus-br.yaml"))
    got = await request(api, "network", "get", {"name": "multus-br"})
    assert got["item"]["bridge"] == "multus-bridge" and got["item"]["subnet"] == "192.168.100.0/24"
    vm = yaml.safe_load((REPO / "examples" / "testvm-2-secondary.yaml").read_text())
    assert "item" in await request(api, "vm", "create", vm)  # stopped: it only names the network
    assert "item" in await request(api, "vmi", "apply", vmi_on("multus-br"))
    assert "address" in await request(api, "fip", "create", {"address": "192.168.100.77", "network": "multus-br"})
    tables = Bucket(api.raw[subjects.BUCKET_IPAM], dict[str, str])
    await tables.put(subjects.ipam_network("multus-br"), {"testvm-2": "192.168.100.2"})

    refused = await request(api, "network", "delete", {"name": "multus-br"})
    assert refused["error"]["code"] == "Conflict", refused
    assert "VMI onnet" in refused["error"]["message"] and "floating IP 192.168.100.77" in refused["error"]["message"]
    assert "item" in await request(api, "network", "get", {"name": "multus-br"})  # refused: nothing changed

    assert "message" in await request(api, "vmi", "delete", {"name": "onnet"})
    assert "message" in await request(api, "fip", "delete", {"address": "192.168.100.77"})
    done = await request(api, "network", "delete", {"name": "multus-br"})
    assert done["message"].startswith("network multus-br deleted"), done
    assert "testvm-2" in done["message"]  # the stopped VM that still names it is told of
    gone = await request(api, "network", "get", {"name": "multus-br"})
    assert gone["error"]["code"] == "NotFound", gone
    listed = await request(api, "network", "list", {})
    assert [n["name"] for n in listed["items"]] == []
    assert await tables.get(subjects.ipam_network("multus-br")) is None  # the kept addresses went too
    again = await request(api, "network", "delete", {"name": "multus-br"})
    assert again["error"]["code"] == "NotFound", again


@pytest.mark.parametrize("body", [{"name": "../etc"}, {"name": "x", "extra": 1}, {}, {"name": "A_B"}])
async def test_bad_names_are_refused_and_change_nothing(api: Store, body: dict[str, Any]) -> None:
    assert "item" in await request(api, "network", "apply", example("provider-l2.yaml"))
    for verb in ("get", "delete"):
        reply = await request(api, "network", verb, body)
        assert reply["error"]["code"] in ("BadRequest", "Invalid"), reply
    listed = await request(api, "network", "list", {})
    assert [n["name"] for n in listed["items"]] == ["provider-l2"]
