"""cloudInitConfigDrive: cloud-init's OpenStack config drive, an ISO labelled ``config-2`` holding
``openstack/latest/{meta_data.json,user_data,network_data.json}``, as KubeVirt writes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from proto.spec import CloudInitConfigDrive
from servicekit.paths import safe_name


def meta_data(*, uid: str, hostname: str) -> str:
    """Pure: the drive's meta_data.json (cloud-init takes the instance id from ``uuid``)."""
    uid, hostname = safe_name(uid, "uid"), safe_name(hostname, "hostname")
    return json.dumps({"uuid": uid, "instance_id": uid, "hostname": hostname, "local_hostname": hostname,
                       "name": hostname}, indent=2) + "\n"


def make_config_drive(source: CloudInitConfigDrive, *, uid: str, hostname: str, vmi_dir: Path) -> Path:
    """Blocking: the ISO in the VMI's directory, gone with it."""
    src = vmi_dir / "config-2"
    shutil.rmtree(src, ignore_errors=True)  # a restarted launcher writes it afresh
    latest = src / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text(meta_data(uid=uid, hostname=hostname))
    if source.user_data:
        (latest / "user_data").write_text(source.user_data)
    if source.network_data:
        (latest / "network_data.json").write_text(source.network_data)
    iso = vmi_dir / "config-2.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "config-2", "-joliet", "-rock", "."],
                   cwd=src, check=True, capture_output=True)
    return iso
