"""``virtbus get vmirs|vmpools -o yaml`` prints KubeVirt's objects, which apply back to the same set;
``scale`` and ``delete`` take the kinds as kubectl spells them."""

from __future__ import annotations

import msgspec
import yaml

from ctl import cli, commands, lifecyclecmd, workloadcmd
from proto import workloads
from proto.manifest import parse_manifest_obj
from proto.spec import VMSpec
from proto.workloads import PoolView, ReplicaSetView, WorkloadStatus
from tests.conftest import REPO

STATUS = WorkloadStatus(replicas=2, ready_replicas=1)


def test_a_replica_set_prints_as_kubevirt_and_applies_back_the_same() -> None:
    rs = workloads.parse_replicaset(yaml.safe_load((REPO / "examples" / "testvmirs.yaml").read_text()))
    printed = workloadcmd.rs_object(ReplicaSetView(replica_set=msgspec.structs.replace(rs, created_at=5.0),
                                                   status=STATUS))
    assert (printed["kind"], printed["status"]) == ("VirtualMachineInstanceReplicaSet",
                                                    {"replicas": 2, "readyReplicas": 1})
    assert workloads.parse_replicaset(yaml.safe_load(yaml.safe_dump(printed))) == rs


def test_a_pool_prints_as_kubevirt_and_applies_back_the_same() -> None:
    doc = yaml.safe_load((REPO / "examples" / "testvmpool.yaml").read_text())

    def read(obj: object) -> workloads.Pool:
        name, replicas, chosen, vm = workloads.pool_vm_manifest(obj)
        spec = parse_manifest_obj(vm)
        assert isinstance(spec, VMSpec)
        return workloads.Pool(name=name, replicas=replicas, selector=chosen, template=spec)

    pool = read(doc)
    printed = workloadcmd.pool_object(PoolView(pool=pool, status=STATUS))
    assert printed["apiVersion"] == "pool.kubevirt.io/v1alpha1"
    assert read(yaml.safe_load(yaml.safe_dump(printed))) == pool


def test_the_cli_takes_the_kinds_as_kubectl_spells_them() -> None:
    args = cli.parser().parse_args(["scale", "vmirs", "testreplicaset", "--replicas", "3"])
    assert (workloadcmd.kind_of(args.kind), args.name, args.replicas) == ("vmirs", "testreplicaset", 3)
    args = cli.parser().parse_args(["delete", "vmpool", "vm-pool-cirros"])
    assert workloadcmd.kind_of(args.kind) == "vmpool"
    assert commands.COMMANDS[args.command].coroutine() is lifecyclecmd.cmd_delete
    for spelled in ("vmpools", "pools", "VirtualMachinePools", "virtualmachineinstancereplicaset"):
        assert workloadcmd.kind_of(spelled) is not None
    assert workloadcmd.kind_of("vms") is None
