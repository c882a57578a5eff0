"""`virtbus create vm ... | virtbus apply -f -` against a real api service: the manifest virtctl's
create vm would print, an instancetype's size written in by the API, is stored as the VM it says, with
KubeVirt's defaults for what it leaves out (a disk per volume, the pod network)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from ctl import cli, createtypes, manifestcmd
from ctl.client import ApiClient
from ctl.createvm import manifest
from servicekit.store import Store

pytestmark = pytest.mark.integration


async def test_a_created_manifest_applies_as_the_vm_it_says(api: Store, nats_url: str, tmp_path: Path) -> None:
    flags = cli.parser().parse_args(["create", "vm", "--name", "made", "--instancetype", "u1.nano",
                                     "--volume-containerdisk", "src:quay.io/kubevirt/cirros-container-disk-demo",
                                     "--run-strategy", "Halted"])
    path = tmp_path / "made.yaml"
    path.write_text(yaml.safe_dump(manifest(flags)))
    client = await ApiClient.connect(nats_url)
    try:
        assert await manifestcmd.cmd_apply(client, argparse.Namespace(file=str(path))) == 0
    finally:
        await client.close()
    stored = await api.vms.require("made", "VM")
    spec = stored.value.spec
    assert spec.instancetype == "u1.nano" and spec.memory == "512Mi"
    assert [d.name for d in spec.disks] == ["made-containerdisk-0"]
    assert [(n.name, n.kind) for n in spec.networks] == [("default", "pod")]
    assert [(i.name, i.binding) for i in spec.interfaces] == [("default", "bridge")]


async def test_a_created_instancetype_and_preference_size_and_shape_a_created_vm(api: Store, nats_url: str,
                                                                                 tmp_path: Path) -> None:
    """virtctl's walk: create instancetype, create preference, create vm naming both, each applied."""
    docs = [createtypes.instancetype(cli.parser().parse_args(
                ["create", "instancetype", "--name", "two-by-1g", "--cpu", "2", "--memory", "1Gi", "--namespaced"])),
            createtypes.preference(cli.parser().parse_args(
                ["create", "preference", "--name", "by-cores", "--cpu-topology", "cores"])),
            manifest(cli.parser().parse_args(
                ["create", "vm", "--name", "shaped", "--instancetype", "virtualmachineinstancetype/two-by-1g",
                 "--preference", "by-cores", "--volume-containerdisk",
                 "src:quay.io/kubevirt/cirros-container-disk-demo", "--run-strategy", "Halted"]))]
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    client = await ApiClient.connect(nats_url)
    try:
        assert await manifestcmd.cmd_apply(client, argparse.Namespace(file=str(path))) == 0
    finally:
        await client.close()
    spec = (await api.vms.require("shaped", "VM")).value.spec
    assert (spec.instancetype, spec.memory) == ("two-by-1g", "1Gi")
    assert (spec.cpu.sockets, spec.cpu.cores, spec.cpu.threads) == (1, 2, 1)  # sockets without it
