"""Images: a qcow2 made from the test guest's disk is uploaded (checked, with its checksum), boots
a VM as its containerDisk, and its node's cache entry outlives the image's deletion while the VM
uses it; a truncated copy is refused with the reason and never reaches the store."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, guest_disk
from tests.e2e.test_faults import wait_until
from tests.e2e.test_volumes import MARKER, vm_manifest

pytestmark = pytest.mark.e2e
IMAGE = "virtbus/guest:qcow2"


def test_a_qcow2_image_boots_a_vm_and_a_truncated_one_is_refused(lab: Lab, tmp_path: Path) -> None:
    qcow2 = tmp_path / "guest.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", guest_disk(), str(qcow2)], check=True)
    short = tmp_path / "short.qcow2"
    short.write_bytes(qcow2.read_bytes()[:-1000])
    refused = lab.cli("image", "upload", "virtbus/short", "--file", str(short), check=False)
    assert refused.returncode == 1 and "truncated" in refused.stderr, refused.stderr

    began = time.monotonic()
    done = lab.cli("image", "upload", IMAGE, "--file", str(qcow2))
    print(f"\nupload of a {qcow2.stat().st_size} byte qcow2: {time.monotonic() - began:.1f}s\n{done.stdout}")
    sha = hashlib.sha256(qcow2.read_bytes()).hexdigest()
    assert f"sha256 {sha}" in done.stdout and "100%" in done.stderr, done.stdout + done.stderr
    listed = {line.split()[0]: line.split() for line in lab.cli("image", "list").stdout.splitlines()[1:]}
    assert "virtbus/short" not in listed
    assert listed[IMAGE][1] == "qcow2" and listed[IMAGE][-1] == sha, listed

    lab.cli("apply", "-f", vm_manifest(lab, "fromqcow2", root={"containerDisk": {"image": IMAGE}}, templates=[],
                                       extra=[]))
    lab.cli("start", "fromqcow2", "--wait", "--timeout", "300")
    lab.cli("console", "fromqcow2", "--log", "--until", MARKER, "--timeout", "180")
    [entry] = lab.state_dir.glob(f"nodes/*/images/{sha[:2]}/{sha[2:]}.img")
    node_log = lab.state_dir / "logs" / f"handler-{entry.parts[-4]}.log"
    swept_before = node_log.read_text().count("image cache swept")
    lab.cli("image", "delete", IMAGE)
    wait_until("its node swept its cache", lambda: node_log.read_text().count("image cache swept") > swept_before,
               30, lab)
    assert entry.exists(), "the cache entry of a running VM's image was removed"
    lab.cli("console", "fromqcow2", "--send", "echo still-$((40+2))\\n")
    lab.cli("console", "fromqcow2", "--log", "--until", "still-42", "--timeout", "60")
    lab.cli("delete", "fromqcow2", "--wait", "--timeout", "120")
