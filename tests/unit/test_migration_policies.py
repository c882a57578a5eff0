"""KubeVirt's MigrationPolicy (proto.migrationpolicies): read as KubeVirt's users write it, refused by
path where virtbus cannot honour it, and chosen for an instance by KubeVirt's rule."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from proto import migrationpolicies, stored, subjects
from proto.errors import ApiError, Code
from proto.migrationpolicies import MigrationPolicy, manifest, matching, overlay, parse
from proto.state import MigrationOptions

KUBEVIRT_DOCS = """
apiVersion: migrations.kubevirt.io/v1alpha1
kind: MigrationPolicy
metadata:
  name: my-awesome-policy
spec:
  allowAutoConverge: true
  bandwidthPerMigration: 217Ki
  completionTimeoutPerGiB: 23
  allowPostCopy: false
  selectors:
    namespaceSelector:
      kubernetes.io/metadata.name: default
    virtualMachineInstanceSelector:
      workload-type: db
      operating-system: ""
"""


def doc(**spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(KUBEVIRT_DOCS)
    out["spec"].update(spec)
    return out


def test_kubevirts_own_example_is_read_and_written_back_the_same() -> None:
    item = parse(yaml.safe_load(KUBEVIRT_DOCS))
    assert item == MigrationPolicy(name="my-awesome-policy",
                                   vmi_selector={"workload-type": "db", "operating-system": ""},
                                   namespace_selector={"kubernetes.io/metadata.name": "default"},
                                   allow_auto_converge=True, bandwidth_per_migration=217 * 1024,
                                   completion_timeout_per_gib=23)
    assert parse(manifest(item)) == item
    stored.validator(MigrationPolicy)(item.name, item)
    assert subjects.BUCKET_MIGRATION_POLICIES in subjects.CONTROL_BUCKETS


@pytest.mark.parametrize(("changed", "field", "code"), [
    ({"allowPostCopy": True}, "spec.allowPostCopy", Code.INVALID),
    ({"maxDowntimeMs": 300}, "spec.maxDowntimeMs", Code.INVALID),
    ({"experimental": {}}, "spec.experimental", Code.INVALID),
    ({"completionTimeoutPerGiB": 0}, "spec.completionTimeoutPerGiB", Code.INVALID),
    ({"bandwidthPerMigration": "fast"}, "spec.bandwidthPerMigration", Code.INVALID),
    ({"allowAutoConverge": "yes"}, "spec.allowAutoConverge", Code.BAD_REQUEST),
    ({"selectors": {"virtualMachineInstanceSelector": {"bad key!": "x"}}},
     "spec.selectors.virtualMachineInstanceSelector", Code.INVALID),
    ({"selectors": {"nodeSelector": {}}}, "spec.selectors.nodeSelector", Code.INVALID),
])
def test_what_virtbus_cannot_honour_is_refused_with_its_path(changed: dict[str, Any], field: str, code: Code) -> None:
    with pytest.raises(ApiError) as refused:
        parse(doc(**changed))
    assert (refused.value.field, refused.value.code) == (field, code), refused.value


def test_a_policy_without_selectors_selects_nothing_and_is_refused() -> None:
    bare = doc()
    del bare["spec"]["selectors"]
    with pytest.raises(ApiError) as refused:
        parse(bare)
    assert refused.value.field == "spec.selectors"
    with pytest.raises(ApiError):
        parse({**doc(), "metadata": {"name": "Not_A_Name"}})


def policy(name: str, vmi: dict[str, str] | None = None, ns: dict[str, str] | None = None) -> MigrationPolicy:
    return MigrationPolicy(name=name, vmi_selector=vmi or {}, namespace_selector=ns or {}, bandwidth_per_migration=1)


def test_the_policy_matching_the_most_labels_wins_then_the_instances_then_the_first_name() -> None:
    labels = {"app": "db", "tier": "gold"}
    one, two = policy("one", {"app": "db"}), policy("two", {"app": "db", "tier": "gold"})
    assert matching([one, two], labels) is two  # more labels matched
    assert matching([one, policy("x", {"app": "web"})], labels) is one  # every label must match
    by_ns = policy("ns", {"app": "db"}, {"kubernetes.io/metadata.name": "default"})
    assert matching([one, by_ns], labels) is by_ns  # the namespace's count too
    assert matching([policy("b", {"app": "db"}), policy("a", {"tier": "gold"})], labels).name == "a"  # type: ignore[union-attr]
    vmi_heavy, ns_heavy = policy("z", {"app": "db", "tier": "gold"}), policy("a", {"app": "db"},
                                                                             {"kubernetes.io/metadata.name": "default"})
    assert matching([ns_heavy, vmi_heavy], labels) is vmi_heavy  # a tie: the instance's labels count first
    assert matching([policy("other-ns", None, {"team": "hpc"})], labels) is None  # another namespace's
    assert matching([policy("everything", None, {"kubernetes.io/metadata.name": "default"})], {}) is not None
    assert matching([], labels) is None


def test_a_policy_overrides_what_it_sets_and_keeps_the_clusters_rest() -> None:
    cluster = MigrationOptions(bandwidth_per_migration=64 << 20, progress_timeout=300, disable_tls=True)
    item = MigrationPolicy(name="p", vmi_selector={"a": "b"}, allow_auto_converge=True, completion_timeout_per_gib=23)
    assert overlay(cluster, item) == MigrationOptions(bandwidth_per_migration=64 << 20, progress_timeout=300,
                                                      disable_tls=True, allow_auto_converge=True,
                                                      completion_timeout_per_gib=23)
    assert overlay(cluster, None) == cluster
    assert overlay(cluster, MigrationPolicy(name="q", bandwidth_per_migration=0)).bandwidth_per_migration == 0


def test_a_stored_policy_holds_to_the_same_rules() -> None:
    check = stored.validator(MigrationPolicy)
    for bad in (MigrationPolicy(name="p", completion_timeout_per_gib=0),
                MigrationPolicy(name="p", vmi_selector={"!": ""}),
                MigrationPolicy(name="p", bandwidth_per_migration=-1)):
        with pytest.raises(ApiError):
            check("p", bad)
    with pytest.raises(ApiError):
        check("other", MigrationPolicy(name="p"))
    assert migrationpolicies.is_migration_policy(doc())
