"""VMs worth keeping: a volume keeps what a real guest wrote through stop/start and restart, a VM
boots from a volume made from an image, and a VM's own volume (dataVolumeTemplates) goes with it,
its file too."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import Lab, guest_disk
from tests.e2e.test_faults import wait_until

pytestmark = pytest.mark.e2e
MARKER = "VIRTBUS-GUEST-READY"
IMAGE = "quay.io/kubevirt/cirros-container-disk-demo"
DATA_SECTORS = 64 * 1024 * 1024 // 512  # the 64Mi data volume, as /sys/block/*/size says it
GROWN_SECTORS = 96 * 1024 * 1024 // 512  # the same, resized to 96Mi


def vm_manifest(lab: Lab, name: str, *, root: dict[str, object], templates: list[dict[str, object]],
                extra: list[tuple[str, dict[str, object]]]) -> str:
    volumes = [{"name": "root", **root}, *({"name": n, **source} for n, source in extra)]
    manifest = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                "spec": {"runStrategy": "Halted", "dataVolumeTemplates": templates, "template": {"spec": {
                    "domain": {"resources": {"requests": {"memory": "64M"}},
                               "devices": {"disks": [{"name": v["name"], "disk": {"bus": "virtio"}} for v in volumes],
                                           "interfaces": [{"name": "default", "masquerade": {}}]}},
                    "networks": [{"name": "default", "pod": {}}],
                    "volumes": volumes}}}}
    path = lab.state_dir / f"{name}.json"
    path.write_text(json.dumps(manifest))
    return str(path)


def say_in_guest(lab: Lab, name: str, command: str, tag: str) -> str:
    """Run a shell command on the guest's console; returns the console once ``tag`` was printed."""
    lab.cli("console", name, "--send", command + "\\n")
    return lab.cli("console", name, "--log", "--until", tag, "--timeout", "60").stdout


def grown_in_guest(lab: Lab, name: str, dev: str, then: str = "") -> str:
    """Waits in the guest (20 s at most) for /dev/<dev> to have the resized volume's size; returns the
    console once it said its size (and ``then``)."""
    size = f"$(cat /sys/block/{dev}/size)"
    return say_in_guest(lab, name, f"for i in $(seq 20); do [ {size} = {GROWN_SECTORS} ] && break; sleep 1; done; "
                                   f"echo G$((3+3))-{size}{then}-E", "G6-")


def volume_files(lab: Lab) -> list[str]:
    return sorted(p.name for p in lab.state_dir.glob("nodes/*/volumes/*.qcow2"))


def test_a_volume_keeps_what_the_guest_wrote(lab: Lab) -> None:
    blank = {"metadata": {"name": "keeper-data"}, "spec": {
        "source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "64Mi"}}}}}
    lab.cli("apply", "-f", vm_manifest(lab, "keeper", root={"containerDisk": {"image": IMAGE}}, templates=[blank],
                                       extra=[("data", {"dataVolume": {"name": "keeper-data"}})]))
    listed = lab.cli("volume", "list").stdout
    assert "keeper-data" in listed and "<first consumer>" in listed, listed
    lab.cli("start", "keeper", "--wait", "--timeout", "300")
    lab.cli("console", "keeper", "--log", "--until", MARKER, "--timeout", "180")
    node = json.loads(lab.cli("volume", "get", "keeper-data", "-o", "json").stdout)["node"]
    vmi = json.loads(lab.cli("get", "vmis", "keeper", "-o", "json").stdout)
    assert vmi["status"]["nodeName"] == node, "the volume is on its first consumer's node"
    find = f'for d in /sys/block/vd*; do [ "$(cat $d/size)" = {DATA_SECTORS} ] && D=/dev/${{d##*/}}; done'
    say_in_guest(lab, "keeper", f"{find}; echo kept-$((6*7)) > $D; sync; echo W$((1+1))-$D", "W2-/dev/vd")

    def read_back(tag: str) -> None:
        lab.cli("console", "keeper", "--log", "--until", MARKER, "--timeout", "180")
        out = say_in_guest(lab, "keeper", f"{find}; echo {tag}$((2+3))-$(head -c 7 $D)-E", f"{tag}5-")
        assert f"{tag}5-kept-42-E" in out, out[-1500:]

    lab.cli("stop", "keeper", "--wait", "--timeout", "120")
    lab.cli("start", "keeper", "--wait", "--timeout", "300")
    read_back("S")  # stopped and started: a new instance, the same bytes
    first_uid = json.loads(lab.cli("get", "vmis", "keeper", "-o", "json").stdout)["metadata"]["uid"]
    lab.cli("restart", "keeper", "--wait", "--timeout", "300")
    assert json.loads(lab.cli("get", "vmis", "keeper", "-o", "json").stdout)["metadata"]["uid"] != first_uid
    read_back("R")
    # resized while the guest runs (KubeVirt's ExpandDisks): the guest's disk grows at once, its bytes kept
    disk = say_in_guest(lab, "keeper", f"{find}; echo D$((2+2))-$D-E", "D4-").rsplit("D4-", 1)[1].split("-E")[0]
    grown = lab.cli("volume", "resize", "keeper-data", "--size", "96Mi").stdout
    assert "the guest of VM keeper sees it now" in grown, grown
    out = grown_in_guest(lab, "keeper", disk.removeprefix("/dev/"), f"-$(head -c 7 {disk})")
    assert f"G6-{GROWN_SECTORS}-kept-42-E" in out, out[-1500:]
    events = lab.cli("get", "events").stdout.splitlines()
    assert any("VolumeExpanded" in line and "keeper-data" in line for line in events), events
    refused = lab.cli("volume", "delete", "keeper-data", check=False)
    assert refused.returncode == 1 and "in use by VM keeper" in refused.stderr, refused.stderr
    assert len(volume_files(lab)) == 1

    # deleted with its VM, and its file with it once the instance is gone
    lab.cli("delete", "keeper", "--wait", "--timeout", "120")
    assert "keeper-data" not in lab.cli("volume", "list").stdout
    wait_until("the volume's file removed by its node", lambda: volume_files(lab) == [], 60, lab)


def test_a_vm_boots_from_a_volume_made_from_an_image(lab: Lab) -> None:
    """virtctl image-upload's way (a local file into a new DataVolume, written on its first VM's node),
    booted; and virtbus's own, a volume from an image of the store written now on a named node: the
    image's disk, byte for byte."""
    began = time.monotonic()
    said = lab.cli("image-upload", "dv", "booted-root", "--size=1Gi", f"--image-path={guest_disk()}").stdout
    assert "Uploading" in said and "completed successfully" in said, said
    lab.cli("apply", "-f", vm_manifest(lab, "booted", root={"persistentVolumeClaim": {"claimName": "booted-root"}},
                                       templates=[], extra=[]))
    lab.cli("start", "booted", "--wait", "--timeout", "300")
    print(f"\n1 GiB volume from an image, first start -> Running: {time.monotonic() - began:.1f}s")
    lab.cli("console", "booted", "--log", "--until", MARKER, "--timeout", "180")
    [path] = [p for p in lab.state_dir.glob("nodes/*/volumes/booted-root-*.qcow2")]
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 1 << 30 and "backing-filename" not in info, info  # a copy, not an overlay
    lab.cli("delete", "booted", "--wait", "--timeout", "120")
    assert "booted-root" in lab.cli("volume", "list").stdout, "made on its own: it outlives the VM"
    lab.cli("volume", "delete", "booted-root")
    lab.cli("image", "delete", "upload/booted-root")

    made = lab.cli("volume", "create", "copied-root", "--size", "1Gi", "--from-image", IMAGE, "--node", "node1",
                   "--wait").stdout
    assert "volume/copied-root: Ready" in made, made
    [copy] = [p for p in lab.state_dir.glob("nodes/node1/volumes/copied-root-*.qcow2")]
    same = subprocess.run(["qemu-img", "compare", "-U", guest_disk(), str(copy)], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr  # the rest of the 1Gi reads as zeros
    lab.cli("volume", "delete", "copied-root")
    wait_until("the volume's file removed by its node", lambda: not Path(path).exists(), 60, lab)


def test_a_vmi_of_its_own_as_kubevirt_writes_it(lab: Lab) -> None:
    """examples/testvmi.yaml: applied unchanged, it runs; `delete vmi` stops it and clears its pod away."""
    applied = lab.cli("apply", "-f", str(REPO / "examples" / "testvmi.yaml")).stdout
    assert "virtualmachineinstance/testvmi applied" in applied, applied

    def running() -> bool:
        done = lab.cli("get", "vmis", "testvmi", "-o", "json", check=False)
        return done.returncode == 0 and json.loads(done.stdout)["status"].get("phase") == "Running"

    wait_until("the VMI running", running, 180, lab)
    lab.cli("console", "testvmi", "--log", "--until", MARKER, "--timeout", "180")
    assert "testvmi" not in lab.cli("get", "vms").stdout, "no VM behind it"
    node = json.loads(lab.cli("get", "vmis", "testvmi", "-o", "json").stdout)["status"]["nodeName"]
    lab.cli("delete", "vmi", "testvmi", "--wait", "--timeout", "120")
    assert lab.cli("get", "vmis", "testvmi", check=False).returncode == 1
    assert f"{lab.prefix}-{node}-testvmi" not in lab.netns()


def test_a_volume_hotplugged_into_a_running_guest_keeps_what_it_wrote(lab: Lab) -> None:
    """virtctl addvolume's way: a volume put on a running guest as a scsi disk (the guest sees /dev/sda
    with its serial), written, taken off (the guest no longer has it), put back (the bytes are there),
    and kept in the VM's spec, so the next start has it again."""
    lab.cli("volume", "create", "hot-data", "--size", "64Mi")
    lab.cli("apply", "-f", vm_manifest(lab, "hotvm", root={"containerDisk": {"image": IMAGE}}, templates=[],
                                       extra=[]))
    lab.cli("start", "hotvm", "--wait", "--timeout", "300")
    lab.cli("console", "hotvm", "--log", "--until", MARKER, "--timeout", "180")
    began = time.monotonic()
    added = lab.cli("addvolume", "hotvm", "--volume-name", "hot-data", "--serial", "HOT1", "--wait").stdout
    print(f"\naddvolume -> Ready in the guest's domain: {time.monotonic() - began:.1f}s")
    assert "Successfully submitted add volume request to VM hotvm for volume hot-data" in added
    assert "Ready as sda" in added, added
    vmi = json.loads(lab.cli("get", "vmis", "hotvm", "-o", "json").stdout)
    [status] = [s for s in vmi["status"]["volumeStatus"] if s["name"] == "hot-data"]
    assert (status["phase"], status["target"], status["reason"], status["hotplugVolume"]) == (
        "Ready", "sda", "VolumeReady", {}), status
    assert {"name": "hot-data", "persistentVolumeClaim": {"claimName": "hot-data", "hotpluggable": True}} in \
        vmi["spec"]["volumes"]
    vm = json.loads(lab.cli("get", "vms", "hotvm", "-o", "json").stdout)
    assert {"name": "hot-data", "disk": {"bus": "scsi"}, "serial": "HOT1"} in \
        vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"]
    node = json.loads(lab.cli("volume", "get", "hot-data", "-o", "json").stdout)["node"]
    assert node == vmi["status"]["nodeName"], "the volume is on its first consumer's node"
    seen = say_in_guest(lab, "hotvm", "echo SD-$(cat /sys/block/sda/size)-$(tr -dc A-Z0-9 </sys/block/sda/device/"
                                      "vpd_pg80)-E; echo hot-$((6*7)) >/dev/sda; sync; echo W$((1+1))", "W2")
    assert f"SD-{DATA_SECTORS}-HOT1-E" in seen, seen[-1500:]
    began = time.monotonic()
    lab.cli("volume", "resize", "hot-data", "--size", "96Mi")  # a scsi disk grows under the guest too
    assert f"G6-{GROWN_SECTORS}-E" in grown_in_guest(lab, "hotvm", "sda")
    print(f"volume resize -> the guest's disk grown, as its console says it: {time.monotonic() - began:.1f}s")
    # a volume hotplugged while the guest runs is snapshotted by its launcher, as the boot's are
    done = lab.cli("volume", "snapshot", "hot-data", "--name", "hot-snap", "--wait", "--timeout", "120", check=False)
    assert done.returncode == 0 and "Ready" in done.stdout, f"{done.stdout}\n{done.stderr}"
    part = json.loads(lab.cli("volume", "snapshot", "get", "hot-snap", "-o", "json").stdout)
    assert part["online"] and part["takenBy"] == "vmi/hotvm", part
    lab.cli("volume", "snapshot", "delete", "hot-snap")
    refused = lab.cli("volume", "delete", "hot-data", check=False)
    assert refused.returncode == 1 and "in use by VM hotvm" in refused.stderr, refused.stderr

    removed = lab.cli("removevolume", "hotvm", "--volume-name", "hot-data", "--wait").stdout
    assert "removed" in removed, removed
    gone = say_in_guest(lab, "hotvm", "[ -b /dev/sda ] || echo NO$((2+2))SDA", "NO4SDA")
    assert "NO4SDA" in gone
    vm = json.loads(lab.cli("get", "vms", "hotvm", "-o", "json").stdout)
    assert all(v["name"] != "hot-data" for v in vm["spec"]["template"]["spec"]["volumes"])

    lab.cli("addvolume", "hotvm", "--volume-name", "hot-data", "--disk-name", "again", "--wait")
    back = say_in_guest(lab, "hotvm", "echo R$((3+4))-$(head -c 6 /dev/sda)-E", "R7-")
    assert "R7-hot-42-E" in back, back[-1500:]
    lab.cli("restart", "hotvm", "--wait", "--timeout", "300")
    lab.cli("console", "hotvm", "--log", "--until", MARKER, "--timeout", "180")
    # attached again once the guest runs, by its launcher, as after an addvolume
    booted = say_in_guest(lab, "hotvm", "for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/sda ] && break; sleep 1; done; "
                                        "echo B$((4+4))-$(head -c 6 /dev/sda)-E", "B8-")
    assert "B8-hot-42-E" in booted, booted[-1500:]
    vmi = json.loads(lab.cli("get", "vmis", "hotvm", "-o", "json").stdout)
    assert any(s["name"] == "again" and s.get("phase") == "Ready" for s in vmi["status"]["volumeStatus"]), vmi
    lab.cli("delete", "hotvm", "--wait", "--timeout", "120")
    lab.cli("volume", "delete", "hot-data")
    wait_until("the volume's file removed by its node", lambda: volume_files(lab) == [], 60, lab)
