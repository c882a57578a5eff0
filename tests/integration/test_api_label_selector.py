"""A VM's own labels (its metadata.labels) are kept and printed back, and `vm.list` / `vmi.list` take
kubectl's label selector text over plain NATS: the VMs or VMIs it picks, or a typed error."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import msgspec
import pytest
import yaml

from ctl import watches
from ctl.client import ApiClient
from proto.api import SelectRequest, VMReply
from proto.resources import vm_object
from proto.selector import parse_text
from servicekit.store import Store
from tests.apirequests import request
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def vm(name: str, labels: dict[str, str] | None, instance_labels: dict[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "testvm-masquerade.yaml").read_text())
    doc["metadata"] = {"name": name, **({"labels": labels} if labels is not None else {})}
    doc["spec"]["template"]["metadata"]["labels"] = instance_labels
    return dict(doc)


def vmi(name: str, labels: dict[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "testvmi.yaml").read_text())
    doc["metadata"] = {"name": name, "labels": labels}
    return dict(doc)


async def listed(store: Store, kind: str, text: str) -> list[str]:
    reply = await request(store, kind, "list", {"labelSelector": text})
    assert "items" in reply, reply
    if kind == "vm":
        return [item["vm"]["spec"]["name"] for item in reply["items"]]
    return [item["name"] for item in reply["items"]]


async def test_vms_and_vmis_by_label(api: Store) -> None:
    for name, labels, instance in [("web1", {"app": "web", "tier": "front"}, {"role": "server"}),
                                   ("web2", {"app": "web"}, {"role": "server"}),
                                   ("db", {"app": "db"}, {"role": "store"}),
                                   ("bare", None, {})]:
        reply = await request(api, "vm", "create", vm(name, labels, instance))
        assert "item" in reply, reply
    for name, labels in [("solo-web", {"role": "server", "app": "web"}), ("solo-db", {"role": "store"})]:
        reply = await request(api, "vmi", "apply", vmi(name, labels))
        assert "error" not in reply, reply
    assert await listed(api, "vm", "") == ["bare", "db", "web1", "web2"]
    assert await listed(api, "vm", "app=web") == ["web1", "web2"]
    assert await listed(api, "vm", "app=web,tier") == ["web1"]
    assert await listed(api, "vm", "app notin (web)") == ["bare", "db"]
    assert await listed(api, "vm", "!app") == ["bare"]
    # a VMI by its own labels
    assert await listed(api, "vmi", "role=server") == ["solo-web"]
    assert await listed(api, "vmi", "role in (server,store),app!=web") == ["solo-db"]

    # kept as written, and printed back as kubectl prints a VirtualMachine's metadata
    got = msgspec.json.decode(json.dumps(await request(api, "vm", "get", {"name": "web1"})), type=VMReply)
    assert vm_object(got.item)["metadata"]["labels"] == {"app": "web", "tier": "front"}

    # a label change alone is applied, as metadata: the VM's labels are what the manifest says now, and
    # its generation (which counts changes of the spec) stays
    relabelled = await request(api, "vm", "apply", vm("web2", {"app": "api"}, {"role": "server"}))
    assert relabelled["item"]["vm"].get("generation", 1) == 1, relabelled  # 1 is left out
    assert await listed(api, "vm", "app=web") == ["web1"]
    respecced = await request(api, "vm", "apply", vm("web2", {"app": "api"}, {"role": "other"}))
    assert respecced["item"]["vm"]["generation"] == 2, respecced


@pytest.mark.parametrize(("kind", "body", "code", "field"), [
    ("vm", {"labelSelector": "app in web"}, "Invalid", "labelSelector"),
    ("vm", {"labelSelector": "app=$(reboot)"}, "Invalid", "labelSelector"),
    ("vmi", {"labelSelector": 5}, "BadRequest", "labelSelector"),
    ("vmi", {"labelSelector": "a", "extra": 1}, "BadRequest", None),
    ("vm", {"fieldSelector": "x"}, "BadRequest", None),
])
async def test_a_bad_selector_gets_a_typed_error(api: Store, kind: str, body: dict[str, object], code: str,
                                                 field: str | None) -> None:
    assert "item" in await request(api, "vm", "create", vm("one", {"app": "web"}, {}))
    error = (await request(api, kind, "list", body))["error"]
    assert error["code"] == code and error.get("field") == field, error
    assert "Traceback" not in error["message"]


async def test_a_vm_with_labels_that_kubernetes_refuses_is_refused(api: Store) -> None:
    error = (await request(api, "vm", "create", vm("bad", {"app": "a b"}, {})))["error"]
    assert (error["code"], error["field"]) == ("Invalid", "metadata.labels"), error
    assert await api.vms.items() == []
    assert SelectRequest().label_selector == ""  # {} still lists every VM, as before


async def test_get_vms_watch_prints_a_vm_as_it_changes(api: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """`virtbus get vms -w -l app=web` on a real bus: the VMs picked, each as it is made, relabelled and
    deleted (its record's changes in `vms`; its instance's in `vmis` come the same way)."""
    assert "item" in await request(api, "vm", "create", vm("web1", {"app": "web"}, {}))
    assert "item" in await request(api, "vm", "create", vm("db", {"app": "db"}, {}))
    client = ApiClient(api.nc)
    watching = asyncio.create_task(watches.vms(client, None, parse_text("app=web", "selector"), None, False))

    async def rows(count: int) -> list[list[str]]:
        for _ in range(100):
            lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
            seen.extend(lines)
            if len(seen) >= count:
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"not {count} lines: {seen}")

    seen: list[list[str]] = []
    try:
        assert [r[0] for r in await rows(2)] == ["NAME", "web1"]
        assert "item" in await request(api, "vm", "create", vm("web2", {"app": "web"}, {}))
        assert [r[0] for r in await rows(3)][2] == "web2"
        assert "item" in await request(api, "vm", "apply", vm("web1", {"app": "api"}, {}))  # no longer picked
        assert (await rows(4))[3] == ["web1", "<deleted>"]
        assert "message" in await request(api, "vm", "delete", {"name": "web2"})
        assert (await rows(5))[4] == ["web2", "<deleted>"]
        await asyncio.sleep(0.3)
        assert capsys.readouterr().out.strip() == "", "db never shows"
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
