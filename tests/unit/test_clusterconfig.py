"""The KubeVirt CR as virtbus reads it: cpuAllocationRatio taken, KubeVirt's stock empty defaults
accepted, anything else refused with its full path; bad ratios refused with a typed error; and the
ratio, passed in as a value, decides how many vCPUs placement lets on a node."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest
import yaml

from proto import clusterconfig, stored, subjects
from proto.clusterconfig import DEFAULT_CPU_ALLOCATION_RATIO, RATIO_PATH, ClusterConfig, MigrationsConfig
from proto.errors import ApiError, Code
from proto.spec import VMSpec
from proto.state import VMI, MigrationOptions, Node
from scheduler.capacity import CapacityIndex
from scheduler.placement import Request, place, usage
from tests.conftest import REPO

STOCK = yaml.safe_load((REPO / "examples" / "kubevirt-cr.yaml").read_text())


def cr(ratio: object = None, **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(STOCK)
    if ratio is None:
        del doc["spec"]["configuration"]["developerConfiguration"]["cpuAllocationRatio"]
    else:
        doc["spec"]["configuration"]["developerConfiguration"]["cpuAllocationRatio"] = ratio
    doc["spec"].update(spec)
    return doc


def refused(doc: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        clusterconfig.parse(doc, now=1.0)
    return caught.value


def test_the_stock_cr_with_a_ratio_sets_it() -> None:
    config = clusterconfig.parse(STOCK, now=5.0)
    assert config == ClusterConfig(name="kubevirt", cpu_allocation_ratio=25, updated_at=5.0)


def test_a_cr_without_the_ratio_is_kubevirts_default() -> None:
    assert clusterconfig.parse(cr(), now=1.0).cpu_allocation_ratio == DEFAULT_CPU_ALLOCATION_RATIO == 10
    bare = {"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt"}}
    assert clusterconfig.parse(bare, now=1.0).cpu_allocation_ratio == 10


def test_what_get_prints_applies_back_as_it_is() -> None:
    config = clusterconfig.parse(cr(40), now=1.0)
    again = clusterconfig.parse(clusterconfig.kubevirt_object(config), now=1.0)
    assert again == config


@pytest.mark.parametrize(("doc", "field"), [
    (cr(20, infra={"replicas": 2}), "spec.infra"),
    (cr(20, configuration={"developerConfiguration": {"memoryOvercommit": 150}}),
     "spec.configuration.developerConfiguration.memoryOvercommit"),
    (cr(20, configuration={"migrations": {"network": "migration"}}), "spec.configuration.migrations.network"),
    (cr(20, configuration={"migrations": {"allowPostCopy": True}}), "spec.configuration.migrations.allowPostCopy"),
    (cr(20, configuration={"developerConfiguration": {"featureGates": ["CPUManager"]}}),
     "spec.configuration.developerConfiguration.featureGates[0]"),
    (cr(20, customizeComponents={"patches": []}), "spec.customizeComponents.patches"),
    ({**cr(20), "extra": 1}, "extra"),
])
def test_what_virtbus_does_not_implement_is_refused_with_its_full_path(doc: object, field: str) -> None:
    err = refused(doc)
    assert err.code is Code.INVALID and err.field == field and "not supported by virtbus" in err.message


@pytest.mark.parametrize(("ratio", "code"), [
    (0, Code.INVALID), (-5, Code.INVALID), (1001, Code.INVALID), (10**12, Code.INVALID),
    (1.5, Code.BAD_REQUEST), ("20", Code.BAD_REQUEST), (True, Code.BAD_REQUEST), ([10], Code.BAD_REQUEST),
])
def test_a_bad_ratio_is_a_typed_error_on_its_field(ratio: object, code: Code) -> None:
    err = refused(cr(ratio))
    assert err.code is code and err.field == RATIO_PATH, err


@pytest.mark.parametrize(("doc", "field"), [
    ({**cr(20), "apiVersion": "kubevirt.io/v2"}, "apiVersion"),
    ({**cr(20), "kind": "VirtualMachine"}, "kind"),
    ({**cr(20), "metadata": {}}, "metadata.name"),
    ({**cr(20), "metadata": {"name": "a/b"}}, "metadata.name"),
    ({**cr(20), "spec": []}, "spec"),
])
def test_a_malformed_cr_names_what_is_wrong(doc: object, field: str) -> None:
    assert refused(doc).field == field


def test_a_stored_value_holds_to_the_same_rules() -> None:
    check = stored.validator(ClusterConfig)
    check(subjects.CONFIG_KUBEVIRT, ClusterConfig(cpu_allocation_ratio=75))
    with pytest.raises(ApiError):
        check("other", ClusterConfig())
    with pytest.raises(ApiError):
        check(subjects.CONFIG_KUBEVIRT, ClusterConfig(name="Not A Name"))
    decode = msgspec.json.Decoder(ClusterConfig).decode
    for bad in (b'{"cpuAllocationRatio":0}', b'{"cpuAllocationRatio":5000}', b'{"cpuAllocationRatio":2.5}'):
        with pytest.raises(msgspec.ValidationError):
            decode(bad)


# --- the ratio as placement uses it

ONE_VCPU = VMSpec(name="x", memory="64Mi")


def node(cpus: int = 2) -> Node:
    return Node(name="node1", cpus=cpus, memory=1 << 40, kvm=False, heartbeat=0.0, started_at=0.0)


def running(n: int) -> list[VMI]:
    return [VMI(name=f"v{i}", uid=f"v{i}", spec=VMSpec(name=f"v{i}", memory="64Mi"), created_at=0.0,
                node_name="node1") for i in range(n)]


def test_the_default_ratio_holds_ten_vcpus_per_cpu() -> None:
    [full] = usage([node()], running(20), {"node1": True})
    assert full.vcpu_capacity == 20
    assert place(ONE_VCPU, [full]).message == "0/1 nodes are available: 1 Insufficient cpu."


def test_a_higher_ratio_fits_more_on_the_same_node() -> None:
    [u] = usage([node()], running(20), {"node1": True}, cpu_ratio=75)
    assert u.vcpu_capacity == 150
    assert place(ONE_VCPU, [u]).node == "node1"
    [full] = usage([node()], running(150), {"node1": True}, cpu_ratio=75)
    assert place(ONE_VCPU, [full]).node is None


def test_the_index_counts_every_node_again_when_the_ratio_changes() -> None:
    index = CapacityIndex()
    index.sync_nodes({"node1": node()}, {"node1": True})
    for i in range(20):
        index.assume(f"v{i}", "node1", Request.of(ONE_VCPU))
    assert place(ONE_VCPU, index.candidates()).node is None
    index.set_cpu_ratio(25)
    assert [u.vcpu_capacity for u in index.usages()] == [50]
    assert place(ONE_VCPU, index.candidates()).node == "node1"
    index.set_cpu_ratio(5)  # lower than what is held: nothing moves, nothing more fits
    assert index.allocation("node1")[2] == 20 and place(ONE_VCPU, index.candidates()).node is None


def test_the_clusters_eviction_strategy_is_read_written_back_and_checked() -> None:
    doc = cr(20, configuration={"developerConfiguration": {"cpuAllocationRatio": 20},
                                "evictionStrategy": "LiveMigrate"})
    config = clusterconfig.parse(doc, now=1.0)
    assert config.eviction_strategy == "LiveMigrate"
    assert clusterconfig.parse(clusterconfig.kubevirt_object(config), now=1.0) == config
    assert clusterconfig.parse(cr(20), now=1.0).eviction_strategy is None
    assert "evictionStrategy" not in str(clusterconfig.kubevirt_object(clusterconfig.parse(cr(20), now=1.0)))
    bad = cr(20, configuration={"evictionStrategy": "Migrate"})
    assert refused(bad).field == "spec.configuration.evictionStrategy"


def test_the_clusters_migration_settings_are_read_written_back_and_checked() -> None:
    doc = cr(20, configuration={"migrations": {
        "parallelMigrationsPerCluster": 3, "parallelOutboundMigrationsPerNode": 1, "bandwidthPerMigration": "64Mi",
        "completionTimeoutPerGiB": 800, "progressTimeout": 300, "allowAutoConverge": True, "allowPostCopy": False,
        "disableTLS": True}})
    config = clusterconfig.parse(doc, now=1.0)
    m = config.migrations
    assert (m.parallel_migrations_per_cluster, m.parallel_outbound_migrations_per_node) == (3, 1)
    assert m.options == MigrationOptions(bandwidth_per_migration=64 << 20, completion_timeout_per_gib=800,
                                         progress_timeout=300, allow_auto_converge=True, disable_tls=True)
    assert clusterconfig.parse(clusterconfig.kubevirt_object(config), now=1.0) == config
    # left out: KubeVirt's defaults, and written back as the user left them (not at all)
    plain = clusterconfig.parse(cr(20), now=1.0)
    assert plain.migrations == MigrationsConfig() and plain.migrations.parallel_migrations_per_cluster == 5
    assert plain.migrations.options.completion_timeout_per_gib == 150
    assert "migrations" not in clusterconfig.kubevirt_object(plain)["spec"]["configuration"]
    assert clusterconfig.parse(cr(20, configuration={"migrations": {"bandwidthPerMigration": "0Mi"}}),
                               now=1.0).migrations.options.bandwidth_per_migration == 0  # no limit


@pytest.mark.parametrize(("key", "value", "code"), [
    ("parallelMigrationsPerCluster", 0, Code.INVALID), ("parallelOutboundMigrationsPerNode", 5000, Code.INVALID),
    ("progressTimeout", -1, Code.INVALID), ("completionTimeoutPerGiB", "150", Code.BAD_REQUEST),
    ("bandwidthPerMigration", "fast", Code.INVALID), ("bandwidthPerMigration", "2Ti", Code.INVALID),
    ("bandwidthPerMigration", True, Code.BAD_REQUEST), ("allowAutoConverge", "yes", Code.BAD_REQUEST),
])
def test_a_bad_migration_setting_is_a_typed_error_on_its_field(key: str, value: object, code: Code) -> None:
    err = refused(cr(20, configuration={"migrations": {key: value}}))
    assert err.code is code and err.field == f"spec.configuration.migrations.{key}", err


def test_a_stored_migration_setting_out_of_range_is_set_aside() -> None:
    check = stored.validator(ClusterConfig)
    for options in (MigrationOptions(progress_timeout=0), MigrationOptions(bandwidth_per_migration=-1)):
        with pytest.raises(ApiError):
            check(subjects.CONFIG_KUBEVIRT, ClusterConfig(migrations=MigrationsConfig(options=options)))
