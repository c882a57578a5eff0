"""-o json|yaml of vms, vmis and nodes (ctl.render): one object by name, kubectl's List without one."""

from __future__ import annotations

import json

import yaml

from ctl import render
from proto.api import VMView
from proto.spec import VMSpec
from proto.state import VM, VMI, Phase, VMIInterface


def vmi(name: str, ip: str) -> VMI:
    return VMI(name=name, uid=f"{name}-uid", spec=VMSpec(name=name), created_at=1.0, phase=Phase.RUNNING,
               node_name="node1", interfaces=[VMIInterface(name="default", ip_address=ip, ip_addresses=[ip])])


def test_one_vmi_by_name_is_the_object() -> None:
    out = json.loads(render.vmi_objects([vmi("a", "10.244.1.2")], "json", one=True))
    assert out["kind"] == "VirtualMachineInstance"
    assert out["status"]["interfaces"][0]["ipAddress"] == "10.244.1.2"


def test_a_list_is_kubectls_list() -> None:
    out = json.loads(render.vmi_objects([vmi("a", "10.244.1.2"), vmi("b", "10.244.1.3")], "json"))
    assert (out["apiVersion"], out["kind"]) == ("v1", "List")
    assert [i["metadata"]["name"] for i in out["items"]] == ["a", "b"]
    assert json.loads(render.vmi_objects([], "json")) == {"apiVersion": "v1", "kind": "List", "items": []}


def test_yaml_says_the_same_in_kubectls_order() -> None:
    view = VMView(vm=VM(spec=VMSpec(name="a"), created_at=1.0), revision=5, printable_status="Stopped")
    text = render.vm_objects([view], "yaml", one=True)
    assert text.splitlines()[:2] == ["apiVersion: kubevirt.io/v1", "kind: VirtualMachine"]
    assert yaml.safe_load(text)["metadata"]["resourceVersion"] == "5"
