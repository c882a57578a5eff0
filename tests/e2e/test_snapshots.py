"""Snapshots that bring a volume back on another node: a real guest writes on its volume,
`virtbus vm snapshot` takes both of the VM's volumes while the guest runs (one libvirt backup job in
its launcher), the guest writes over it, `virtbus vmexport download` brings the volume to a local file
as it is and as the snapshot has it, `virtbus vm restore` brings the snapshot's content back,
a clone of the running VM (`virtbus create clone | apply -f`) boots with copies of its volumes and
reads the same, then the snapshot is restored as a new volume on the OTHER node, and a VM using it
boots there and reads what was written. Then bench/volume_snapshots.py runs small, so it cannot rot."""

from __future__ import annotations

import gzip
import json
import re
import time

import pytest

from tests.e2e.conftest import Lab
from tests.e2e.test_bench_smoke import bench
from tests.e2e.test_volumes import MARKER, say_in_guest, vm_manifest

pytestmark = pytest.mark.e2e
IMAGE = "quay.io/kubevirt/cirros-container-disk-demo"
DATA_SECTORS = 64 * 1024 * 1024 // 512
FIND = f'for d in /sys/block/vd*; do [ "$(cat $d/size)" = {DATA_SECTORS} ] && D=/dev/${{d##*/}}; done'


def vm_with(lab: Lab, name: str, *volumes: str) -> str:
    return vm_manifest(lab, name, root={"containerDisk": {"image": IMAGE}}, templates=[],
                       extra=[(f"data{i}", {"persistentVolumeClaim": {"claimName": v}}) for i, v in enumerate(volumes)])


def read_data(lab: Lab, vm: str, tag: str) -> str:
    lab.cli("console", vm, "--log", "--until", MARKER, "--timeout", "180")
    out = say_in_guest(lab, vm, f"{FIND}; echo {tag}$((2+3))-$(head -c 7 $D)-E", f"{tag}5-")
    return out[out.rindex(f"{tag}5-"):].splitlines()[0].strip()


def test_a_snapshot_taken_while_the_guest_runs_comes_back_on_the_other_node(lab: Lab) -> None:
    made = lab.cli("volume", "create", "snapdata", "--size", "64Mi", "--node", "node1", "--wait").stdout
    assert "volume/snapdata: Ready" in made, made
    lab.cli("volume", "create", "snapaux", "--size", "32Mi")  # placed with the VM, populated then
    lab.cli("apply", "-f", vm_with(lab, "snapper", "snapdata", "snapaux"))
    lab.cli("start", "snapper", "--wait", "--timeout", "300")
    lab.cli("console", "snapper", "--log", "--until", MARKER, "--timeout", "180")
    say_in_guest(lab, "snapper", f"{FIND}; echo kept-$((6*7)) > $D; sync; echo W$((1+1))-$D", "W2-/dev/vd")

    began = time.monotonic()
    done = lab.cli("vm", "snapshot", "snapper", "--name", "snap1", "--wait", "--timeout", "300", check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{lab.logs()}"
    taken = done.stdout
    print(f"\nsnapshot of a running VM's 64Mi volume -> Ready: {time.monotonic() - began:.1f}s")
    assert "snapshot/snap1-snapdata: Ready" in taken, taken
    part = json.loads(lab.cli("volume", "snapshot", "get", "snap1-snapdata", "-o", "json").stdout)
    assert part["online"] and part["takenBy"] == "vmi/snapper" and part["node"] == "node1", part
    print(f"online snapshot of the 64Mi volume: {part['size'] / 2**20:.1f} MiB in the store")
    assert "Ready" in lab.cli("vm", "snapshot", "list").stdout
    assert "snap1-snapaux" in lab.cli("volume", "snapshot", "list").stdout  # both volumes, one job
    say_in_guest(lab, "snapper", f"{FIND}; echo gone-07 > $D; sync; echo W$((2+2))", "W4")

    # virtctl vmexport download: the running VM's volume as it is now (gzipped, virtctl's default),
    # and as the snapshot has it (raw); the export's own snapshot goes once it is downloaded
    live, kept = lab.state_dir / "snapdata.img.gz", lab.state_dir / "snapdata.img"
    said = lab.cli("vmexport", "download", "live", "--vm", "snapper", "--volume", "snapdata", "--output", str(live))
    assert gzip.decompress(live.read_bytes())[:8] == b"gone-07\n", said.stdout
    lab.cli("vmexport", "download", "old", "--snapshot=snap1", "--volume=snapdata", "--format=raw", f"--output={kept}")
    assert kept.read_bytes()[:8] == b"kept-42\n" and kept.stat().st_size == 64 * 2**20
    assert [v["item"]["name"] for v in json.loads(lab.cli("vm", "snapshot", "list", "-o", "json").stdout)] == ["snap1"]
    live.unlink()
    kept.unlink()

    # VirtualMachineRestore: stopped, its volumes get the snapshot's content back, on its node
    lab.cli("stop", "snapper", "--wait", "--timeout", "120")
    lab.cli("vm", "restore", "snap1", "--wait")
    lab.cli("start", "snapper", "--wait", "--timeout", "300")
    assert read_data(lab, "snapper", "V") == "V5-kept-42-E"

    # VirtualMachineClone, as virtctl writes it, of the VM while it runs: a VM of its own, stopped,
    # with copies of both volumes that boot and read what the source had
    manifest = lab.state_dir / "clone.yaml"
    manifest.write_text(lab.cli("create", "clone", "--name", "twinning", "--source-name", "snapper",
                                "--target-name", "twin").stdout)
    assert "vm/snapper -> vm/twin" in lab.cli("apply", "-f", str(manifest)).stdout
    deadline = time.monotonic() + 300
    while (clone := json.loads(lab.cli("get", "vmclone", "twinning", "-o", "json").stdout)).get("phase") != "Succeeded":
        assert clone.get("phase") != "Failed" and time.monotonic() < deadline, clone
        time.sleep(0.5)
    twin = json.loads(lab.cli("get", "vm", "twin", "-o", "json").stdout)
    assert twin["spec"]["runStrategy"] == "Halted", twin  # made stopped, as KubeVirt makes it
    lab.cli("start", "twin", "--wait", "--timeout", "300")
    assert read_data(lab, "twin", "T") == "T5-kept-42-E"
    lab.cli("delete", "twin", "--wait", "--timeout", "120")
    lab.cli("delete", "vmclone", "twinning")
    for copy in sorted(clone["volumes"].values()):
        lab.cli("volume", "delete", copy)
    lab.cli("stop", "snapper", "--wait", "--timeout", "120")

    restored = lab.cli("volume", "restore", "snap1-snapdata", "--to", "snapdata2", "--node", "node2", "--wait").stdout
    assert "volume/snapdata2: Ready" in restored, restored
    lab.cli("apply", "-f", vm_with(lab, "restored", "snapdata2"))
    lab.cli("start", "restored", "--wait", "--timeout", "300")
    vmi = json.loads(lab.cli("get", "vmis", "restored", "-o", "json").stdout)
    assert vmi["status"]["nodeName"] == "node2", "it runs where its restored volume is"
    assert read_data(lab, "restored", "R") == "R5-kept-42-E"
    for vm in ("restored", "snapper"):
        lab.cli("delete", vm, "--wait", "--timeout", "120")
    lab.cli("vm", "snapshot", "delete", "snap1")
    for volume in ("snapdata", "snapaux", "snapdata2"):
        lab.cli("volume", "delete", volume)


def test_the_volume_snapshot_bench_prints_its_figures(lab: Lab) -> None:
    out = bench(lab, "volume_snapshots.py", "--server", lab.url, "--size", "64Mi", "--fill-mib", "8",
                "--state-dir", str(lab.state_dir))
    print(out)
    assert re.search(r"create->Ready \d+\.\d+s; snapshot->Ready \d+\.\d+s \(\d+\.\d+ MiB in the store, 8 MiB "
                     r"written\); restore on node2->Ready \d+\.\d+s", out), out
