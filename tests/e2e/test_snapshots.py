"""Snapshots that bring a volume back on another node: a real guest writes a file on its volume,
`virtbus vm snapshot` takes it while the guest runs (its launcher's libvirt backup job), the VM is
stopped, the snapshot is restored as a new volume on the OTHER node, and a VM using it boots there
and reads what was written. Then bench/volume_snapshots.py runs small, so it cannot rot."""

from __future__ import annotations

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


def vm_with(lab: Lab, name: str, volume: str) -> str:
    return vm_manifest(lab, name, root={"containerDisk": {"image": IMAGE}}, templates=[],
                       extra=[("data", {"persistentVolumeClaim": {"claimName": volume}})])


def test_a_snapshot_taken_while_the_guest_runs_comes_back_on_the_other_node(lab: Lab) -> None:
    made = lab.cli("volume", "create", "snapdata", "--size", "64Mi", "--node", "node1", "--wait").stdout
    assert "volume/snapdata: Ready" in made, made
    assert "Ready" in lab.cli("volume", "list").stdout
    lab.cli("apply", "-f", vm_with(lab, "snapper", "snapdata"))
    lab.cli("start", "snapper", "--wait", "--timeout", "300")
    lab.cli("console", "snapper", "--log", "--until", MARKER, "--timeout", "180")
    say_in_guest(lab, "snapper", f"{FIND}; echo kept-$((6*7)) > $D; sync; echo W$((1+1))-$D", "W2-/dev/vd")

    began = time.monotonic()
    taken = lab.cli("vm", "snapshot", "snapper", "--name", "snap1", "--wait", "--timeout", "300").stdout
    print(f"\nsnapshot of a running VM's 64Mi volume -> Ready: {time.monotonic() - began:.1f}s")
    assert "snapshot/snap1-snapdata: Ready" in taken, taken
    part = json.loads(lab.cli("volume", "snapshot", "get", "snap1-snapdata", "-o", "json").stdout)
    assert part["online"] and part["takenBy"] == "vmi/snapper" and part["node"] == "node1", part
    assert "Ready" in lab.cli("vm", "snapshot", "list").stdout
    lab.cli("stop", "snapper", "--wait", "--timeout", "120")

    restored = lab.cli("volume", "restore", "snap1-snapdata", "--to", "snapdata2", "--node", "node2", "--wait").stdout
    assert "volume/snapdata2: Ready" in restored, restored
    lab.cli("apply", "-f", vm_with(lab, "restored", "snapdata2"))
    lab.cli("start", "restored", "--wait", "--timeout", "300")
    vmi = json.loads(lab.cli("get", "vmis", "restored", "-o", "json").stdout)
    assert vmi["status"]["nodeName"] == "node2", "it runs where its restored volume is"
    lab.cli("console", "restored", "--log", "--until", MARKER, "--timeout", "180")
    out = say_in_guest(lab, "restored", f"{FIND}; echo R$((2+3))-$(head -c 7 $D)-E", "R5-")
    assert "R5-kept-42-E" in out, out[-1500:]
    for vm in ("restored", "snapper"):
        lab.cli("delete", vm, "--wait", "--timeout", "120")
    lab.cli("vm", "snapshot", "delete", "snap1")
    for volume in ("snapdata", "snapdata2"):
        lab.cli("volume", "delete", volume)


def test_the_volume_snapshot_bench_prints_its_figures(lab: Lab) -> None:
    out = bench(lab, "volume_snapshots.py", "--server", lab.url, "--size", "64Mi", "--fill-mib", "8",
                "--state-dir", str(lab.state_dir))
    print(out)
    assert re.search(r"create->Ready \d+\.\d+s; snapshot->Ready \d+\.\d+s \(\d+\.\d+ MiB in the store, 8 MiB "
                     r"written\); restore on node2->Ready \d+\.\d+s", out), out
