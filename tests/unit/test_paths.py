"""servicekit.paths: a name becomes a path under its root, or nothing; and where it is used."""

from __future__ import annotations

from pathlib import Path

import pytest

from handler.launchers import Launchers, NodePaths
from launcher.disks import image_path, meta_data
from proto.errors import ApiError
from servicekit.paths import UnsafeName, path_under, safe_name

HOSTILE = ["/", "..", ".", "a/b", "../etc", "/etc/passwd", "-rf", "vm\n", "vm\nlocal-hostname: evil",
           "; flush ruleset", "a" * 300, "a" * 64, "vm\x00", "Vm", "vm ", " vm", "vm-", "", "été", "ｖｍ",
           "vm.img", "*", "vm\r"]


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_hostile_names_never_become_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeName):
        safe_name(name)
    with pytest.raises(UnsafeName):
        path_under(tmp_path, name, ".qcow2")


@pytest.mark.parametrize("name", ["vm", "testvm-2", "a" * 63, "0b7c5f4e-1111-4222-8333-444455556666", "9"])
def test_safe_names_are_files_directly_in_the_root(tmp_path: Path, name: str) -> None:
    path = path_under(tmp_path, name, ".qcow2")
    assert path.parent == tmp_path and path.name == f"{name}.qcow2"


@pytest.mark.parametrize("suffix", ["/x", "/../x", "..", "-x", ".QCOW2\n"])
def test_a_suffix_cannot_climb_either(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(UnsafeName):
        path_under(tmp_path, "vm", suffix)


def _launchers(root: Path) -> Launchers:
    return Launchers(NodePaths(root / "state", root / "logs"), node="node1", nats_url="nats://x",
                     netns_prefix="vbtest", kvm=False)


@pytest.mark.parametrize("name", ["/", "..", ".", "../..", "-rf", "vm\n"], ids=repr)
def test_clean_up_of_a_hostile_vmi_removes_nothing(tmp_path: Path, name: str) -> None:
    launchers = _launchers(tmp_path)
    (tmp_path / "state" / "vmis" / "other").mkdir(parents=True)
    (tmp_path / "keep").write_text("x")
    launchers.clean_up(name)
    assert (tmp_path / "keep").read_text() == "x"
    assert (tmp_path / "state" / "vmis" / "other").is_dir()


def test_clean_up_of_a_vmi_removes_its_directory_only(tmp_path: Path) -> None:
    launchers = _launchers(tmp_path)
    (tmp_path / "state" / "vmis" / "vm1").mkdir(parents=True)
    (tmp_path / "state" / "vmis" / "vm2").mkdir()
    launchers.clean_up("vm1")
    assert sorted(p.name for p in (tmp_path / "state" / "vmis").iterdir()) == ["vm2"]


def test_meta_data_refuses_newline_injection() -> None:
    assert meta_data(uid="u-1", hostname="vm") == "instance-id: u-1\nlocal-hostname: vm\n"
    for uid, hostname in [("u\nlocal-hostname: evil", "vm"), ("u", "vm\nfoo: bar"), ("u", "-x")]:
        with pytest.raises(UnsafeName):
            meta_data(uid=uid, hostname=hostname)


def test_image_cache_is_named_by_the_content_digest_only(tmp_path: Path) -> None:
    # sha256 of b"" as a nats object store writes it
    digest = "SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="
    path = image_path(tmp_path, digest)
    assert path == tmp_path / "e3" / "b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.img"
    for bad in [None, "", "deadbeef", "SHA-256=", "SHA-256=../../etc", "SHA-256=AAAA",
                "MD5=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU="]:
        with pytest.raises(ApiError):
            image_path(tmp_path, bad)
