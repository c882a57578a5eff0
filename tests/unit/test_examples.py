"""The repository's examples/ (what the lab and the README apply) are the seed manifests: each parses
as it is, and each says what the shared seed of the same name says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from proto import (
    clonemanifest,
    clusterconfig,
    instancetypes,
    migrationpolicies,
    migrations,
    preferences,
    priorities,
    routes,
    services,
    snapshotmanifest,
    workloads,
)
from proto.manifest import INSTANCE_KIND, parse_instance, parse_manifest, parse_manifest_obj
from proto.spec import VMSpec
from tests.conftest import EXAMPLES, REPO

OURS = sorted((REPO / "examples").glob("*.yaml"))
EXAMPLE_PREFERENCES = {p.name: p for p in (preferences.parse(yaml.safe_load(path.read_text()))
                                           for path in (REPO / "examples").glob("preference-*.yaml"))}


def test_the_lab_has_its_examples() -> None:
    assert {p.name for p in OURS} >= {"testvm-masquerade.yaml", "testvm-2-secondary.yaml", "multus-br.yaml"}
    assert "examples" in (REPO / "scripts" / "lab.sh").read_text()


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.name)
def test_each_example_parses_as_the_seed_does(path: Path) -> None:
    data = path.read_bytes()
    docs = [d for d in yaml.safe_load_all(data) if d]
    if all(priorities.is_priority_class(d) for d in docs):  # KubeVirt's example classes, as they are
        assert [priorities.parse(d).name for d in docs] == ["preemtible", "non-preemtible"]
        return
    if all(d.get("kind") in ("Service", "Endpoints") for d in docs):  # v1 objects, as `apply -f` sends them
        for d in docs:
            parsed = services.parse_service(d, uid="u", now=0.0) if d["kind"] == "Service" else \
                services.parse_endpoints(d)
            assert parsed.name == d["metadata"]["name"]
        return
    [doc] = docs
    if doc.get("kind") in snapshotmanifest.KINDS:
        asked = snapshotmanifest.parse(doc)
        assert getattr(asked, "vm", None) == "keeper", "against examples/testvm-persistent.yaml's VM"
        return
    if migrations.is_migration(doc):
        assert migrations.parse(doc)[1] == "testvm", "against examples/testvm-masquerade.yaml's VM"
        return
    if migrationpolicies.is_migration_policy(doc):  # it selects the lab's testvm by its template's labels
        testvm = parse_manifest((REPO / "examples" / "testvm-masquerade.yaml").read_bytes())
        assert isinstance(testvm, VMSpec)
        assert migrationpolicies.matching([migrationpolicies.parse(doc)], testvm.labels) is not None
        return
    if doc.get("kind") == clonemanifest.KIND:
        assert clonemanifest.parse(doc).source == "keeper", "against examples/testvm-persistent.yaml's VM"
        return
    if instancetypes.is_instancetype(doc):
        assert instancetypes.parse(doc).name == doc["metadata"]["name"]
        return
    if clusterconfig.is_kubevirt(doc):
        assert clusterconfig.parse(doc, now=0.0).cpu_allocation_ratio == 25
        return
    if preferences.is_preference(doc):
        assert preferences.parse(doc).name == doc["metadata"]["name"]
        return
    if doc.get("kind") in ("Route", "Ingress"):  # what every node's proxy serves
        parse = routes.parse_route if doc["kind"] == "Route" else routes.parse_ingress
        assert parse(doc, uid="u", now=0.0).name == doc["metadata"]["name"]
        return
    if doc.get("kind") == workloads.RS_KIND:
        assert workloads.parse_replicaset(doc).name == doc["metadata"]["name"]
        return
    if doc.get("kind") == workloads.POOL_KIND:  # its template is read as the API reads any VM
        name, _, _, vm = workloads.pool_vm_manifest(doc)
        template = parse_manifest_obj(instancetypes.expand(vm, instancetypes.COMMON.get))
        assert isinstance(template, VMSpec) and workloads.pool_template(name, template).name == name
        return
    if {"instancetype", "preference"} & set(doc.get("spec", {})):  # as the API expands it before it parses it
        sized = instancetypes.expand(doc, instancetypes.COMMON.get)
        data = json.dumps(preferences.expand(sized, {**preferences.COMMON, **EXAMPLE_PREFERENCES}.get)).encode()
    is_instance = doc.get("kind") == INSTANCE_KIND
    ours = (parse_instance if is_instance else parse_manifest)(data, content_type="yaml")
    seed = EXAMPLES / path.name
    if seed.exists():  # beside a clone there may be no shared/: then ours alone is checked
        assert ours == (parse_instance if is_instance else parse_manifest)(seed.read_bytes(), content_type="yaml")
