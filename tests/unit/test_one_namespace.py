"""virtbus has one set of names: a manifest of a namespaced kind may say `namespace: default`, and any
other namespace is refused by its field, for every kind, so that `prod/db` never replaces `default/db`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from proto import clusterconfig, instancetypes, preferences, routes, services, snapshotmanifest, workloads
from proto.errors import ApiError, Code
from proto.manifest import parse_instance_obj, parse_manifest_obj
from proto.spec import VMSpec
from tests.conftest import REPO

EXAMPLES = REPO / "examples"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if isinstance(d, dict)]


def doc(name: str, kind: str) -> dict[str, Any]:
    [found] = [d for d in docs(name) if d["kind"] == kind]
    return found


READERS: list[tuple[str, str, Callable[[dict[str, Any]], object]]] = [
    ("testvm-masquerade.yaml", "VirtualMachine", parse_manifest_obj),
    ("testvmi.yaml", "VirtualMachineInstance", parse_instance_obj),
    ("multus-br.yaml", "NetworkAttachmentDefinition", parse_manifest_obj),
    ("testvmirs.yaml", "VirtualMachineInstanceReplicaSet", workloads.parse_replicaset),
    ("testvmpool.yaml", "VirtualMachinePool", workloads.pool_vm_manifest),
    ("testvm-snapshot.yaml", "VirtualMachineSnapshot", snapshotmanifest.parse),
    ("testvm-restore.yaml", "VirtualMachineRestore", snapshotmanifest.parse),
    ("testvm-service.yaml", "Service", lambda d: services.parse_service(d, uid="u", now=0.0)),
    ("mongo-headless-service.yaml", "Endpoints", services.parse_endpoints),
    ("route-testvm.yaml", "Route", lambda d: routes.parse_route(d, uid="u", now=0.0)),
    ("ingress-testvm.yaml", "Ingress", lambda d: routes.parse_ingress(d, uid="u", now=0.0)),
    ("instancetype-tiny.yaml", "VirtualMachineInstancetype", instancetypes.parse),
    ("preference-legacy.yaml", "VirtualMachinePreference", preferences.parse),
]


@pytest.mark.parametrize(("example", "kind", "read"), READERS, ids=[r[1] for r in READERS])
def test_default_is_the_namespace_and_no_other(example: str, kind: str,
                                                read: Callable[[dict[str, Any]], object]) -> None:
    manifest = doc(example, kind)
    for namespace in (None, "default"):
        given = copy.deepcopy(manifest)
        given["metadata"].pop("namespace", None)
        if namespace is not None:
            given["metadata"]["namespace"] = namespace
        read(given)  # accepted either way
    elsewhere = copy.deepcopy(manifest)
    elsewhere["metadata"]["namespace"] = "prod"
    with pytest.raises(ApiError) as refused:
        read(elsewhere)
    assert (refused.value.code, refused.value.field) == (Code.INVALID, "metadata.namespace")
    assert "'prod'" in refused.value.message and "one namespace" in refused.value.message
    not_a_name = copy.deepcopy(manifest)
    not_a_name["metadata"]["namespace"] = ["default"]
    with pytest.raises(ApiError) as malformed:
        read(not_a_name)
    assert (malformed.value.code, malformed.value.field) == (Code.BAD_REQUEST, "metadata.namespace")


def test_cluster_wide_objects_keep_their_own_namespace() -> None:
    """The KubeVirt CR lives in KubeVirt's namespace; a cluster instancetype has none to compare."""
    cr = doc("kubevirt-cr.yaml", "KubeVirt")
    assert cr["metadata"]["namespace"] == "kubevirt"
    assert clusterconfig.parse(cr, 0.0).cpu_allocation_ratio == 25
    cluster_preference = doc("preference-virtio.yaml", "VirtualMachineClusterPreference")
    cluster_preference["metadata"]["namespace"] = "anything"
    preferences.parse(cluster_preference)


def test_a_multus_network_named_with_its_namespace() -> None:
    """KubeVirt's `networkName: <namespace>/<name>`: this namespace's NAD by its name, another refused."""
    manifest = doc("testvm-2-secondary.yaml", "VirtualMachine")
    multus = manifest["spec"]["template"]["spec"]["networks"][1]["multus"]
    multus["networkName"] = "default/multus-br"
    spec = parse_manifest_obj(manifest)
    assert isinstance(spec, VMSpec)
    assert [n.network_name for n in spec.networks] == [None, "multus-br"]
    multus["networkName"] = "kube-system/multus-br"
    with pytest.raises(ApiError) as refused:
        parse_manifest_obj(manifest)
    assert refused.value.code == Code.INVALID
    assert refused.value.field == "spec.template.spec.networks[1].multus.networkName"
    assert "'kube-system'" in refused.value.message
