"""VirtualMachineClone's pure rules: the target's spec, the filters, the names of the copies, the
controller's steps, the manifest as KubeVirt's user guide writes it and `virtbus create clone`."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from ctl import cli, clonecmd
from proto import clonemanifest
from proto.clones import (
    PREFIX_TARGET_NAME,
    SOURCE_SNAPSHOT,
    ClonePhase,
    Step,
    VMClone,
    checked_target,
    copy_name,
    decide,
    target_spec,
)
from proto.errors import ApiError, Code
from proto.labelfilter import check, kept, matches
from proto.manifest import parse_manifest_obj
from proto.snapshots import SnapshotPhase
from proto.spec import Disk, Ephemeral, Firmware, PersistentVolumeClaim, RunStrategy, VMSpec, Volume
from proto.state import VolumePhase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UID = "0123abcd-0000-4000-8000-000000000000"


def source() -> VMSpec:
    doc = yaml.safe_load((EXAMPLES / "testvm-persistent.yaml").read_text())
    doc["metadata"]["labels"] = {"app": "keeper", "example.org/owner": "ann"}
    doc["metadata"]["annotations"] = {"virtbus.io/high-availability": "true"}
    doc["spec"]["runStrategy"] = "Always"
    tspec = doc["spec"]["template"]["spec"]
    doc["spec"]["template"]["metadata"] = {"labels": {"app": "keeper", "tier": "db"}}
    tspec["domain"]["devices"]["interfaces"][0]["macAddress"] = "02:00:00:00:00:01"
    tspec["domain"]["firmware"] = {"uuid": "5d307ca9-b3ef-428c-8861-06e72d69f223", "serial": "keeper-1"}
    spec = parse_manifest_obj(doc)
    assert isinstance(spec, VMSpec)
    return msgspec.structs.replace(spec, disks=[*spec.disks, Disk(name="base")], volumes=[*spec.volumes, Volume(
        name="base", source=Ephemeral(claim_name="golden"))])


def clone(**changes: Any) -> VMClone:
    return VMClone(name="c1", uid=UID, source="keeper", target="keeper-copy", created_at=1.0, **changes)


def test_the_target_is_the_source_stopped_with_an_identity_and_volumes_of_its_own() -> None:
    copies = {"keeper-root": "keeper-copy-keeper-root", "golden": "keeper-copy-golden"}
    out = target_spec(source(), clone(), copies)
    assert out.name == "keeper-copy" and out.run_strategy is RunStrategy.HALTED
    assert [v.source for v in out.volumes] == [PersistentVolumeClaim(claim_name="keeper-copy-keeper-root"),
                                              Ephemeral(claim_name="keeper-copy-golden")]
    assert [t.name for t in out.data_volume_templates] == ["keeper-copy-keeper-root"]  # its own, gone with it
    assert [i.mac_address for i in out.interfaces] == [None]  # a new one, as KubeVirt's clone gives
    assert out.firmware is None  # no serial, and the UUID its own (from its name)
    assert out.vm_labels == {"app": "keeper", "example.org/owner": "ann"} and out.labels == {"app": "keeper",
                                                                                             "tier": "db"}
    assert out.high_availability and out.memory == source().memory and out.disks == source().disks


def test_the_clone_names_macs_a_serial_and_which_labels_stay() -> None:
    out = target_spec(source(), clone(new_mac_addresses={"default": "02:00:00:00:00:02"}, new_smbios_serial="k-2",
                                      label_filters=["*", "!example.org/*"], template_label_filters=["app"],
                                      annotation_filters=["!virtbus.io/.*"]), {})
    assert [i.mac_address for i in out.interfaces] == ["02:00:00:00:00:02"]
    assert out.firmware == Firmware(serial="k-2")
    assert out.vm_labels == {"app": "keeper"} and out.labels == {"app": "keeper"}
    assert not out.high_availability


@pytest.mark.parametrize(("filters", "wanted"), [
    (None, {"app", "tier", "kubevirt.io/x"}),
    ([], set()),
    (["*"], {"app", "tier", "kubevirt.io/x"}),
    (["kubevirt.io/.*"], {"kubevirt.io/x"}),
    (["*", "!kubevirt.io/"], {"app", "tier"}),
    (["a", "!tier"], {"app"}),  # Go's MatchString: "a" matches anywhere in the key
])
def test_filters_as_kubevirt_reads_them(filters: list[str] | None, wanted: set[str]) -> None:
    assert set(kept({"app": "1", "tier": "2", "kubevirt.io/x": "3"}, filters)) == wanted


def test_the_filter_matcher_agrees_with_regular_expressions() -> None:
    """What virtbus matches in linear time is what a regular expression of the same text matches."""
    rng = random.Random(7)
    for _ in range(3000):
        body = ""
        for _ in range(rng.randint(0, 5)):
            body += rng.choice("ab.") + rng.choice(["", "", "*"])
        pattern = rng.choice(["", "^"]) + body + rng.choice(["", "$"])
        key = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 8)))
        assert matches(pattern, key) == bool(re.search(pattern, key)), (pattern, key)


@pytest.mark.parametrize("bad", ["(a+)+$", "a|b", "[ab]", "a{3}", "a+", "x?", "\\d", "*a", "a**", "a^b"])
def test_filters_beyond_what_virtbus_matches_are_refused(bad: str) -> None:
    """Python's re backtracks where Go's RE2 does not: (a+)+$ would hold the control plane."""
    with pytest.raises(ApiError) as err:
        check(["*", "!" + bad], "spec.labelFilters")
    assert err.value.code is Code.INVALID and err.value.field == "spec.labelFilters[1]"


def test_the_copies_names() -> None:
    assert copy_name("RandomizeNames", "keeper-copy", "keeper-root", UID) == "restore-0123abcd-keeper-root"
    assert copy_name(PREFIX_TARGET_NAME, "keeper-copy", "keeper-root", UID) == "keeper-copy-keeper-root"
    assert copy_name("RandomizeNames", "t", "v" * 63, UID) == ("restore-0123abcd-" + "v" * 63)[:63]
    with pytest.raises(ApiError) as err:
        copy_name(PREFIX_TARGET_NAME, "t" * 40, "v" * 30, UID)
    assert err.value.code is Code.INVALID and err.value.field == "spec.volumeNamePolicy"


@pytest.mark.parametrize(("changes", "field"), [
    ({"new_mac_addresses": {"eth9": "02:00:00:00:00:02"}}, "spec.newMacAddresses.eth9"),
    ({"new_mac_addresses": {"default": "03:00:00:00:00:02"}}, "spec.newMacAddresses.default"),  # multicast
    ({"new_mac_addresses": {"default": "02:00:00:00:00:0g"}}, "spec.newMacAddresses.default"),
    ({"new_smbios_serial": "a;rm -rf /"}, "spec.newSMBiosSerial"),
])
def test_what_the_target_cannot_be_is_blamed_on_the_clones_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as err:
        checked_target(source(), clone(**changes))
    assert err.value.code is Code.INVALID and err.value.field == field


def test_the_controllers_steps() -> None:
    def step(c: VMClone, *, source: bool = True, target: bool = False, volumes: bool = True,
             snapshot: SnapshotPhase | None = None, copies: list[VolumePhase | None] | None = None) -> Step:
        return decide(c, source_exists=source, target_exists=target, has_volumes=volumes, snapshot=snapshot,
                      copies=copies or []).step

    new = clone()
    assert step(new) is Step.SNAPSHOT
    assert step(new, volumes=False) is Step.CREATE_TARGET  # nothing to copy
    assert step(new, source=False) is Step.FAIL
    assert step(new, target=True) is Step.FAIL  # never someone else's VM replaced
    from_snap = clone(source_kind=SOURCE_SNAPSHOT)
    assert step(from_snap, source=False, snapshot=SnapshotPhase.READY) is Step.CREATE_TARGET
    assert step(from_snap, source=False, snapshot=None) is Step.FAIL
    assert step(from_snap, source=False, snapshot=SnapshotPhase.IN_PROGRESS) is Step.WAIT  # still being taken
    assert step(from_snap, source=False, snapshot=SnapshotPhase.FAILED) is Step.FAIL
    taking = clone(phase=ClonePhase.SNAPSHOT_IN_PROGRESS, snapshot="tmp-snapshot-0123abcd")
    assert step(taking, snapshot=SnapshotPhase.IN_PROGRESS) is Step.WAIT
    assert step(taking, snapshot=SnapshotPhase.READY) is Step.CREATE_TARGET
    assert step(taking, snapshot=SnapshotPhase.FAILED) is Step.FAIL
    assert step(taking, snapshot=None) is Step.FAIL
    assert step(taking, snapshot=SnapshotPhase.READY, target=True) is Step.FAIL
    assert step(clone(phase=ClonePhase.CREATING_TARGET_VM), target=True) is Step.CREATE_TARGET  # a new leader
    copying = clone(phase=ClonePhase.RESTORE_IN_PROGRESS, volumes={"keeper-root": "x"})
    assert step(copying, target=True, copies=[VolumePhase.POPULATING]) is Step.WAIT
    assert step(copying, target=True, copies=[VolumePhase.READY]) is Step.FINISH
    assert step(copying, target=True, copies=[VolumePhase.FAILED]) is Step.FAIL
    assert step(copying, target=True, copies=[None]) is Step.FAIL
    assert step(clone(phase=ClonePhase.SUCCEEDED)) is Step.WAIT


def test_the_example_manifest_and_the_user_guides_reads() -> None:
    req = clonemanifest.parse(yaml.safe_load((EXAMPLES / "testvm-clone.yaml").read_text()))
    assert (req.name, req.source, req.target, req.label_filters) == ("keeper-clone", "keeper", "keeper-copy",
                                                                     ["*", "!example.org/*"])
    guide = {"apiVersion": "clone.kubevirt.io/v1alpha1", "kind": "VirtualMachineClone",
             "metadata": {"name": "testclone"},
             "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-cirros"},
                      "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm-clone-target"},
                      "annotationFilters": ["somekey/*"], "labelFilters": ["*", "!someKey/*"],
                      "template": {"labelFilters": ["*"], "annotationFilters": ["*"]},
                      "newMacAddresses": {"interfaceName": "00-11-22"}, "newSMBiosSerial": "SOME-SERIAL"}}
    req = clonemanifest.parse(guide)
    assert req.template_label_filters == ["*"] and req.new_mac_addresses == {"interfaceName": "00-11-22"}
    assert clonemanifest.parse(clonemanifest.manifest(req)) == req


@pytest.mark.parametrize(("path", "value", "field"), [
    (["spec", "patches"], ['{"op": "add"}'], "spec.patches"),
    (["spec", "source", "kind"], "VirtualMachineInstance", "spec.source.kind"),
    (["spec", "target", "kind"], "VirtualMachineSnapshot", "spec.target.kind"),
    (["spec", "source", "name"], "../etc", "spec.source.name"),
    (["spec", "labelFilters"], ["(unclosed"], "spec.labelFilters[0]"),
    (["spec", "labelFilters"], ["*", "!(a+)+$"], "spec.labelFilters[1]"),
    (["spec", "volumeNamePolicy"], "Keep", "spec.volumeNamePolicy"),
    (["metadata", "namespace"], "kube-system", "metadata.namespace"),
])
def test_what_the_manifest_cannot_say_is_refused_by_its_path(path: list[str], value: object, field: str) -> None:
    doc = yaml.safe_load((EXAMPLES / "testvm-clone.yaml").read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ApiError) as err:
        clonemanifest.parse(doc)
    assert err.value.code is Code.INVALID and err.value.field == field


def test_create_clone_prints_what_virtctl_prints() -> None:
    args = cli.kubectl_forms(cli.parser().parse_args(
        ["create", "clone", "--name", "c1", "--source-name", "keeper", "--target-name", "copy",
         "--label-filter", "*", "--label-filter", "!a/*", "--new-mac-address", "default:02:00:00:00:00:09",
         "--new-smbios-serial", "s9"]))
    doc = clonecmd.create_manifest(args)
    assert doc == {"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone",
                   "metadata": {"name": "c1"},
                   "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "keeper"},
                            "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "copy"},
                            "labelFilters": ["*", "!a/*"], "newMacAddresses": {"default": "02:00:00:00:00:09"},
                            "newSMBiosSerial": "s9"}}
    snap = cli.kubectl_forms(cli.parser().parse_args(["create", "clone", "--source-name", "s1",
                                                      "--source-type", "vmsnapshot"]))
    made = clonecmd.create_manifest(snap)
    assert made["spec"]["source"] == {"apiGroup": "snapshot.kubevirt.io", "kind": "VirtualMachineSnapshot",
                                      "name": "s1"}
    assert made["metadata"]["name"].startswith("clone-") and "target" not in made["spec"]
    with pytest.raises(ApiError):
        clonecmd.create_manifest(cli.kubectl_forms(cli.parser().parse_args(
            ["create", "clone", "--source-name", "keeper", "--new-mac-address", "nocolon"])))


def test_kubectls_words_for_clones() -> None:
    def argv(*words: str) -> tuple[str, str, str | None]:
        args = cli.kubectl_forms(cli.parser().parse_args(list(words)))
        return args.command, args.source, args.clone

    assert argv("get", "vmclones") == ("vm", "list", None)
    assert argv("get", "virtualmachineclone/c1") == ("vm", "get", "c1")
    assert argv("delete", "vmclone", "c1") == ("vm", "delete", "c1")
    assert argv("vm", "clone", "keeper", "--to", "copy") == ("vm", "keeper", None)
