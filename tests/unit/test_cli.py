"""The CLI's `get vmis -w`: table rows, or with -o json|yaml each change as a whole VirtualMachineInstance;
with -l, only the VMIs the selector picks. `get vms -w`: a VM's row as it changes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import yaml

from ctl import cli, watches
from ctl.client import ApiClient
from ctl.lifecyclecmd import verb_request
from proto.api import NameRequest, PowerRequest, VMReply, VMView
from proto.errors import ApiError, Code
from proto.selector import LabelSelector, parse_text
from proto.spec import VMSpec
from proto.state import VM, VMI, Phase


class FakeWatch:
    """Plays the KV watch of the VMIs bucket: each update, then returns (the real one never does)."""

    def __init__(self, updates: list[tuple[str, VMI | None]]) -> None:
        self.updates = updates

    async def watch_vmis(self, handle: Callable[[str, VMI | None], None]) -> None:
        for key, value in self.updates:
            handle(key, value)


def vmi(name: str, phase: Phase, node: str | None = None, labels: dict[str, str] | None = None) -> VMI:
    return VMI(name=name, uid=f"{name}-uid", spec=VMSpec(name=name, labels=labels or {}), created_at=1.0,
               phase=phase, node_name=node)


UPDATES: list[tuple[str, VMI | None]] = [("a", vmi("a", Phase.PENDING)), ("b", vmi("b", Phase.PENDING)),
                                         ("a", vmi("a", Phase.RUNNING)), ("a", None)]


async def watched(capsys: pytest.CaptureFixture[str], name: str | None, fmt: str | None) -> str:
    await watches.vmis(cast(ApiClient, FakeWatch(UPDATES)), name, LabelSelector(), fmt, wide=False)
    return capsys.readouterr().out


async def test_watch_prints_rows(capsys: pytest.CaptureFixture[str]) -> None:
    lines = (await watched(capsys, "a", None)).splitlines()
    assert lines[0].split()[:3] == ["NAME", "AGE", "PHASE"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "a", "a"] and lines[-1].endswith("<deleted>")


async def test_watch_json_prints_each_object_and_a_deleted_one_as_last_seen(
        capsys: pytest.CaptureFixture[str]) -> None:
    out = await watched(capsys, "a", "json")
    decoder, objects, at = json.JSONDecoder(), [], 0
    while at < len(out.rstrip()):
        obj: Any
        obj, at = decoder.raw_decode(out, at)
        objects.append(obj)
        while at < len(out) and out[at].isspace():
            at += 1
    assert [(o["kind"], o["metadata"]["name"], o["status"]["phase"]) for o in objects] == [
        ("VirtualMachineInstance", "a", "Pending"), ("VirtualMachineInstance", "a", "Running"),
        ("VirtualMachineInstance", "a", "Running")]


async def test_watch_yaml_is_a_stream_of_documents(capsys: pytest.CaptureFixture[str]) -> None:
    docs = list(yaml.safe_load_all(await watched(capsys, None, "yaml")))
    assert [(d["metadata"]["name"], d["status"]["phase"]) for d in docs] == [
        ("a", "Pending"), ("b", "Pending"), ("a", "Running"), ("a", "Running")]


async def test_watch_with_a_selector_prints_the_vmis_it_picks_while_it_picks_them(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`get vmis -w -l kubevirt.io/nodeName=node1,app=web`: a VMI shows once bound to node1, shows as
    deleted when it goes; one of another app or on another node never shows."""
    web = {"app": "web"}
    updates: list[tuple[str, VMI | None]] = [
        ("a", vmi("a", Phase.PENDING, labels=web)),  # not bound yet: no nodeName label
        ("b", vmi("b", Phase.PENDING, "node1", {"app": "db"})),
        ("c", vmi("c", Phase.SCHEDULED, "node2", web)),
        ("a", vmi("a", Phase.SCHEDULED, "node1", web)),
        ("a", vmi("a", Phase.RUNNING, "node1", web)),
        ("c", None), ("b", None), ("a", None)]
    chosen = parse_text("kubevirt.io/nodeName=node1,app=web", "selector")
    await watches.vmis(cast(ApiClient, FakeWatch(updates)), None, chosen, None, wide=False)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[-1] if row[-1] == "<deleted>" else row[2]) for row in rows] == [
        ("a", "Scheduled"), ("a", "Running"), ("a", "<deleted>")]


class FakeVMs:
    """Plays the API and the watch of the vms and vmis buckets: each update changes what `vm get`
    answers, then names the key that changed (a VMI's change names its VM's key too)."""

    def __init__(self, updates: list[tuple[str, VMView | None]]) -> None:
        self.updates, self.now = updates, dict[str, VMView]()

    async def call(self, kind: str, verb: str, body: NameRequest, reply: type[VMReply]) -> VMReply:
        assert (kind, verb) == ("vm", "get")
        if body.name not in self.now:
            raise ApiError(Code.NOT_FOUND, f"VM {body.name!r} not found")
        return VMReply(item=self.now[body.name])

    async def watch_vm_keys(self, handle: Callable[[str], Awaitable[None]]) -> None:
        for key, view in self.updates:
            if view is None:
                self.now.pop(key, None)
            else:
                self.now[key] = view
            await handle(key)


def vm_view(name: str, status: str, revision: int, labels: dict[str, str] | None = None) -> VMView:
    vm = VM(spec=VMSpec(name=name, vm_labels=labels or {}), created_at=1.0)
    return VMView(vm=vm, revision=revision, printable_status=status)


async def test_watching_vms_prints_each_change_of_a_row_once(capsys: pytest.CaptureFixture[str]) -> None:
    """`get vms -w -l app=web`: a VM's row when its status changes (not when its instance changes in a
    way the row does not show); a VM of another app never; a deleted one as deleted."""
    web = {"app": "web"}
    updates: list[tuple[str, VMView | None]] = [
        ("a", vm_view("a", "Stopped", 1, web)), ("b", vm_view("b", "Stopped", 1, {"app": "db"})),
        ("a", vm_view("a", "Starting", 2, web)), ("a", vm_view("a", "Running", 2, web)),
        ("a", vm_view("a", "Running", 2, web)),  # its instance's stats: the same row
        ("b", vm_view("b", "Running", 2, {"app": "db"})), ("x", None),  # a VMI of its own: no VM
        ("a", None)]
    await watches.vms(cast(ApiClient, FakeVMs(updates)), None, parse_text("app=web", "selector"), None, wide=False)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["NAME", "AGE", "STATUS", "READY"]
    assert [(row[0], row[-1] if row[-1] == "<deleted>" else row[2]) for row in rows[1:]] == [
        ("a", "Stopped"), ("a", "Starting"), ("a", "Running"), ("a", "<deleted>")]


@pytest.mark.parametrize(("argv", "kind", "name"), [
    (["get", "vm/testvm"], "vm", "testvm"),
    (["get", "vmis/testvm", "-o", "yaml"], "vmis", "testvm"),
    (["get", "vms"], "vms", None),
    (["delete", "vm/testvm"], "vm", "testvm"),
    (["delete", "svc/web", "--wait"], "svc", "web"),
    (["delete", "vmirs", "testreplicaset"], "vmirs", "testreplicaset"),
    (["delete", "testvm"], "vm", "testvm"),
    (["delete", "net-attach-def", "multus-br"], "net-attach-def", "multus-br"),
    (["delete", "VirtualMachine/testvm"], "vm", "testvm"),
    (["delete", "virtualmachineinstances", "testvmi"], "vmi", "testvmi"),
    (["delete", "SVC/web"], "svc", "web"),
    (["delete", "network/multus-br", "--ignore-not-found"], "network", "multus-br"),
    (["delete", "-f", "examples/multus-br.yaml"], None, None),
    (["get", "net-attach-def/multus-br"], "net-attach-def", "multus-br"),
])
def test_kubectls_type_slash_name(argv: list[str], kind: str, name: str | None) -> None:
    args = cli.kubectl_forms(cli.parser().parse_args(argv))
    assert (args.kind, args.name) == (kind, name)


@pytest.mark.parametrize("argv", [
    ["delete", "vmi", "vm/x"], ["delete", "pods/x"], ["delete"], ["delete", "vm"], ["delete", "pods", "x"],
    ["delete", "-f", "x.yaml", "testvm"], ["delete", "vm", "testvm", "-f", "x.yaml"],
    ["get", "images", "x"], ["get", "pvc", "-o", "name"], ["get", "vmsnapshots", "-w"], ["delete", "pvc"],
    ["get", "services", "-w"], ["get", "nodes", "-w"], ["get", "svc", "-l", "app=web"], ["get", "vmirs/x", "-l", "a"]])
def test_forms_kubectl_refuses_are_refused_before_connecting(argv: list[str]) -> None:
    with pytest.raises(ApiError) as refused:
        cli.kubectl_forms(cli.parser().parse_args(argv))
    assert refused.value.code is Code.BAD_REQUEST


@pytest.mark.parametrize(("argv", "command", "words"), [
    (["get", "pvc"], ["volume", "list"], {}),
    (["get", "dv/disk1", "-o", "yaml"], ["volume", "get"], {"name": "disk1", "output": "yaml"}),
    (["get", "vmsnapshots"], ["vm", "snapshot"], {"vm": "list"}),
    (["get", "vmsnapshot", "s1"], ["vm", "snapshot"], {"vm": "get", "snapshot": "s1"}),
    (["get", "VirtualMachineClusterInstancetypes", "-o", "json"], ["instancetype", "list"], {"output": "json"}),
    (["get", "vmpref", "virtio-cores"], ["preference", "get"], {"name": "virtio-cores"}),
    (["get", "images"], ["image", "list"], {}),
    (["get", "fips"], ["fip", "list"], {}),
    (["delete", "pvc", "disk1"], ["volume", "delete"], {"name": "disk1"}),
    (["delete", "vmsnapshot/s1"], ["vm", "snapshot"], {"vm": "delete", "snapshot": "s1"}),
    (["delete", "fip", "192.168.200.10"], ["fip", "delete"], {"address": "192.168.200.10"}),
    (["delete", "instancetype", "tiny"], ["instancetype", "delete"], {"name": "tiny"}),
])
def test_kinds_kubectl_gets_and_deletes_go_to_the_command_that_does_them(
        argv: list[str], command: list[str], words: dict[str, str]) -> None:
    args = vars(cli.kubectl_forms(cli.parser().parse_args(argv)))
    sub = next((v for k, v in args.items() if k.endswith("_command")), None)
    assert [args["command"], *([sub] if sub else [])] == command
    assert {k: args[k] for k in words} == words


@pytest.mark.parametrize("argv", [["get", "vmsnapshots"], ["get", "vmclone", "c1", "-o", "json"],
                                  ["delete", "pvc", "disk1"], ["get", "pvc"]])
def test_the_command_that_does_it_asks_the_bus_the_cli_was_given(argv: list[str]) -> None:
    """Found in the lab: `virtbus --server URL get vmclone c1` asked nats://127.0.0.1:4222 instead."""
    given = ["--server", "nats://10.0.0.9:4333", "--creds", "/tmp/me.nk"]
    args = cli.kubectl_forms(cli.parser().parse_args([*given, *argv]))
    assert (args.server, args.creds) == ("nats://10.0.0.9:4333", "/tmp/me.nk")


@pytest.mark.parametrize("text", ["app in (web", "=x", "a b"])
def test_a_malformed_selector_is_refused_before_connecting(text: str) -> None:
    with pytest.raises(ApiError) as refused:
        cli.kubectl_forms(cli.parser().parse_args(["get", "vms", "-l", text]))
    assert refused.value.code is Code.INVALID and refused.value.field == "selector"


@pytest.mark.parametrize(("argv", "command"), [
    (["get", "vms", "-n", "default"], "get"), (["-n", "default", "get", "vms"], "get"),
    (["--namespace", "default", "get", "vm/testvm"], "get"), (["get", "vmis", "-A"], "get"),
    (["get", "vms", "--all-namespaces", "-o", "yaml"], "get"), (["start", "testvm", "-n", "default"], "start"),
    (["stop", "testvm", "--namespace=default", "--wait"], "stop"),
    (["console", "testvm", "-n", "default", "--log"], "console"), (["volume", "list", "-n", "default"], "volume"),
    (["vm", "snapshot", "list", "-n", "default"], "vm"),
    (["port-forward", "vm/testvm/default", "8080:80", "-n", "default"], "port-forward"),
    (["ssh", "cirros@vm/testvm/default"], "ssh"), (["describe", "vm", "testvm", "-n", "default"], "describe"),
    (["get", "pvc", "-n", "default"], "volume")])
def test_kubectls_namespace_when_it_names_the_one_there_is(argv: list[str], command: str) -> None:
    assert cli.kubectl_forms(cli.parser().parse_args(argv)).command == command


@pytest.mark.parametrize(("argv", "field"), [
    (["get", "vms", "-n", "prod"], "namespace"), (["-n", "kube-system", "get", "vms"], "namespace"),
    (["start", "testvm", "--namespace", "Default"], "namespace"), (["volume", "list", "-n", "x"], "namespace"),
    (["port-forward", "vm/testvm/prod", "80"], "target"), (["-n", "prod", "get", "pvc"], "namespace")])
def test_another_namespace_is_refused_before_connecting(argv: list[str], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        cli.kubectl_forms(cli.parser().parse_args(argv))
    assert refused.value.code is Code.INVALID and refused.value.field == field
    assert "one namespace, 'default'" in refused.value.message


def test_the_labs_commands_take_no_namespace() -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["lab", "status", "-n", "default"])


def test_stop_and_restart_take_virtctls_force_and_grace_period_together() -> None:
    parse = cli.parser().parse_args
    assert verb_request(parse(["stop", "vm1", "--force", "--grace-period", "0"])) == \
        PowerRequest(name="vm1", grace_period=0)
    assert verb_request(parse(["restart", "vm1", "--force", "--grace-period=5"])) == \
        PowerRequest(name="vm1", grace_period=5)
    assert verb_request(parse(["stop", "vm1"])) is None
    for argv in (["stop", "vm1", "--force"], ["stop", "vm1", "--grace-period", "0"]):
        with pytest.raises(ApiError) as refused:
            verb_request(parse(argv))
        assert refused.value.field == "grace-period"
