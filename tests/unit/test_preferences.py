"""Preferences as KubeVirt users write them (proto.preferences): what they prefer fills in only what
the VM left unsaid, an instancetype's vCPUs take the preferred topology, and any field virtbus cannot
honour is refused with its path when the preference is applied."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from proto import instancetypes, preferences
from proto.errors import ApiError, Code
from proto.manifest import parse_manifest_obj
from proto.spec import VMSpec
from tests.conftest import REPO

PREFERENCE = yaml.safe_load((REPO / "examples" / "preference-virtio.yaml").read_text())
VM = yaml.safe_load((REPO / "examples" / "testvm-preference.yaml").read_text())
KNOWN = {**preferences.COMMON, "virtio-cores": preferences.parse(PREFERENCE)}


def spec_of(doc: object) -> VMSpec:
    sized = instancetypes.expand(doc, instancetypes.COMMON.get)
    spec = parse_manifest_obj(preferences.expand(sized, KNOWN.get))
    assert isinstance(spec, VMSpec)
    return spec


def test_a_preference_fills_in_what_the_vm_left_unsaid() -> None:
    spec = spec_of(VM)
    assert (spec.cpu.sockets, spec.cpu.cores, spec.cpu.threads) == (1, 2, 1)  # u1.2xmedium's 2, as cores
    assert spec.memory == "4Gi"
    assert [d.bus for d in spec.disks] == ["virtio"]
    assert [i.model for i in spec.interfaces] == ["virtio"]
    assert spec.termination_grace_period_seconds == 0


def test_what_the_vm_says_wins() -> None:
    doc = copy.deepcopy(VM)
    doc["spec"]["preference"]["name"] = "legacy"
    tspec = doc["spec"]["template"]["spec"]
    tspec["domain"]["devices"]["disks"].append({"name": "data", "disk": {"bus": "virtio"}})
    tspec["volumes"].append({"name": "data", "emptyDisk": {"capacity": "1Gi"}})
    tspec["domain"]["devices"]["interfaces"][0]["model"] = "virtio"
    tspec["terminationGracePeriodSeconds"] = 5
    spec = spec_of(doc)
    assert [d.bus for d in spec.disks] == ["sata", "virtio"]  # the unsaid one takes the preference's
    assert [i.model for i in spec.interfaces] == ["virtio"]
    assert spec.termination_grace_period_seconds == 5
    assert (spec.cpu.sockets, spec.cpu.cores) == (2, 1)  # legacy says nothing of topology


def test_an_entropy_device_where_preferred_as_kubevirts_fedora_preference_gives_one() -> None:
    assert not spec_of(VM).rng  # virtio-cores prefers none
    doc = copy.deepcopy(VM)
    doc["spec"]["preference"]["name"] = "fedora"
    assert spec_of(doc).rng
    mine = preferences.parse(edited(["spec", "devices", "preferredRng"], {}))
    assert mine.preferred_rng
    doc["spec"]["preference"]["name"] = "virtio-cores"
    got = parse_manifest_obj(preferences.expand(instancetypes.expand(doc, instancetypes.COMMON.get),
                                                {"virtio-cores": mine}.get))
    assert isinstance(got, VMSpec) and got.rng
    with pytest.raises(ApiError) as err:
        preferences.parse(edited(["spec", "devices", "preferredRng"], {"source": "/dev/random"}))
    assert err.value.field == "spec.devices.preferredRng"


def edited(path: list[str], value: object) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(PREFERENCE)
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize(("doc", "field"), [
    (edited(["spec", "devices", "preferredCdromBus"], "sata"), "spec.devices.preferredCdromBus"),
    (edited(["spec", "devices", "preferredDiskBus"], "usb"), "spec.devices.preferredDiskBus"),
    (edited(["spec", "cpu", "preferredCPUTopology"], "spread"), "spec.cpu.preferredCPUTopology"),
    (edited(["spec", "clock", "preferredClockOffset"], {"utc": {}}), "spec.clock"),
    (edited(["spec", "firmware", "preferredUseEfi"], True), "spec.firmware"),
    (edited(["spec", "requirements"], {"cpu": {"guest": 2}}), "spec.requirements"),
    (edited(["spec", "preferredTerminationGracePeriodSeconds"], -1), "spec.preferredTerminationGracePeriodSeconds"),
    (edited(["metadata", "name"], "cirros"), "metadata.name"),  # the common ones are not replaced
    (edited(["apiVersion"], "kubevirt.io/v1"), "apiVersion"),
])
def test_what_virtbus_cannot_honour_is_refused_with_its_path(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ApiError) as err:
        preferences.parse(doc)
    assert err.value.field == field, (err.value.field, err.value.message)


@pytest.mark.parametrize(("ref", "field"), [
    ({"name": "nosuch"}, "spec.preference.name"),
    ({"name": "cirros", "kind": "Flavor"}, "spec.preference.kind"),
    ({"name": "cirros", "inferFromVolume": "root"}, "spec.preference.inferFromVolume"),
])
def test_a_vm_naming_no_usable_preference_is_refused(ref: dict[str, str], field: str) -> None:
    doc = copy.deepcopy(VM)
    doc["spec"]["preference"] = ref
    with pytest.raises(ApiError) as err:
        spec_of(doc)
    assert (err.value.code, err.value.field) == (Code.INVALID, field)
