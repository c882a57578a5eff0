"""hostDisk files on the node: only under a directory the operator allowed, symlinks resolved;
DiskOrCreate makes a sparse file of its capacity, Disk needs one; the file is never removed. And the
config drive's ISO."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher import configdrive, hostdisks
from proto.errors import ApiError, Code
from proto.spec import CloudInitConfigDrive, HostDisk

FIELD = "spec.template.spec.volumes[3].hostDisk.path"


def refused(disk: HostDisk, dirs: tuple[Path, ...]) -> ApiError:
    with pytest.raises(ApiError) as err:
        hostdisks.prepare(disk, 3, dirs)
    assert (err.value.code, err.value.field) == (Code.INVALID, FIELD)
    assert err.value.message.startswith(FIELD)  # the VMI's reason names the field
    return err.value


def test_disk_or_create_makes_a_sparse_file_and_keeps_it(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    disk = HostDisk(path=str(allowed / "data.img"), kind="DiskOrCreate", capacity="1Gi")
    path = hostdisks.prepare(disk, 3, (allowed,))
    assert path == allowed / "data.img"
    assert path.stat().st_size == 1 << 30 and path.stat().st_blocks == 0  # sparse
    path.write_bytes(b"the guest's")  # a second start finds it as it is, never made again
    assert hostdisks.prepare(disk, 3, (allowed,)).read_bytes() == b"the guest's"


def test_disk_must_exist(tmp_path: Path) -> None:
    assert "does not exist" in refused(HostDisk(path=str(tmp_path / "nope.img")), (tmp_path,)).message
    (tmp_path / "there.img").write_bytes(b"x")
    assert hostdisks.prepare(HostDisk(path=str(tmp_path / "there.img")), 0, (tmp_path,)) == tmp_path / "there.img"
    (tmp_path / "dir.img").mkdir()
    assert "not a regular file" in refused(HostDisk(path=str(tmp_path / "dir.img")), (tmp_path,)).message


def test_no_allowed_directory_refuses_every_hostdisk(tmp_path: Path) -> None:
    (tmp_path / "x.img").write_bytes(b"x")
    assert "--host-disk-dir" in refused(HostDisk(path=str(tmp_path / "x.img")), ()).message


def test_outside_the_allowed_directories(tmp_path: Path) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (other / "x.img").write_bytes(b"x")
    assert "outside" in refused(HostDisk(path=str(other / "x.img")), (allowed,)).message
    assert not (other / "y.img").exists()
    refused(HostDisk(path=str(other / "y.img"), kind="DiskOrCreate", capacity="1Mi"), (allowed,))
    assert not (other / "y.img").exists()  # nothing made where it was refused
    refused(HostDisk(path=str(allowed)), (allowed,))  # the directory itself is no file under it


def test_a_symlink_out_is_followed_and_refused(tmp_path: Path) -> None:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (secret / "shadow").write_bytes(b"root:x")
    (allowed / "link.img").symlink_to(secret / "shadow")
    (allowed / "sub").symlink_to(secret)
    assert str(secret / "shadow") in refused(HostDisk(path=str(allowed / "link.img")), (allowed,)).message
    refused(HostDisk(path=str(allowed / "sub" / "new.img"), kind="DiskOrCreate", capacity="1Mi"), (allowed,))
    assert not (secret / "new.img").exists()


def test_an_allowed_directory_behind_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    disk = HostDisk(path=str(tmp_path / "alias" / "d.img"), kind="DiskOrCreate", capacity="1Mi")
    assert hostdisks.prepare(disk, 3, (tmp_path / "alias",)) == real / "d.img"


def test_allowed_under_is_strict() -> None:
    assert hostdisks.allowed_under(Path("/srv/d/x.img"), (Path("/srv/d"),)) == Path("/srv/d")
    assert hostdisks.allowed_under(Path("/srv/dd/x.img"), (Path("/srv/d"),)) is None  # not a prefix match
    assert hostdisks.allowed_under(Path("/srv/d"), (Path("/srv/d"),)) is None


def test_config_drive_meta_data() -> None:
    meta = json.loads(configdrive.meta_data(uid="0b6c5f4e-1111", hostname="vm-1"))
    assert (meta["uuid"], meta["hostname"], meta["local_hostname"]) == ("0b6c5f4e-1111", "vm-1", "vm-1")


@pytest.mark.skipif(shutil.which("genisoimage") is None or shutil.which("isoinfo") is None, reason="no genisoimage")
def test_config_drive_iso(tmp_path: Path) -> None:
    iso = configdrive.make_config_drive(CloudInitConfigDrive(user_data="#cloud-config\n", network_data="{}"),
                                        uid="u-1", hostname="vm-1", vmi_dir=tmp_path)
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: config-2" in info
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert {"/openstack/latest/meta_data.json", "/openstack/latest/user_data",
            "/openstack/latest/network_data.json"} <= set(listing)
    user = subprocess.run(["isoinfo", "-R", "-x", "/openstack/latest/user_data", "-i", str(iso)],
                          capture_output=True, text=True, check=True).stdout
    assert user == "#cloud-config\n"
