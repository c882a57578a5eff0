"""vmexport download's pure parts: virtctl's command line as it is written, what it refuses before
anything is made, which volume it exports, and the file it writes (whole, or not at all)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ctl import cli, exportcmd
from proto.errors import ApiError, Code


def parsed(*argv: str) -> object:
    args = cli.parser().parse_args(["vmexport", *argv])
    exportcmd.check(args)
    return args


def test_virtctls_command_lines(tmp_path: Path) -> None:
    out = str(tmp_path / "disk.img.gz")
    for argv in (["download", "e", "--vm=testvm", f"--output={out}"],
                 ["download", "e", "--pvc", "data", "--output", out, "--format", "raw", "--port-forward", "--insecure"],
                 ["download", "e", "--snapshot", "s1", "--volume", "data", "--output", out, "--keep-vme"]):
        parsed(*argv)


@pytest.mark.parametrize(("argv", "field"), [
    (["create", "e", "--vm", "v"], "verb"), (["delete", "e"], "verb"),
    (["download", "e", "--output", "x"], "vm"), (["download", "e", "--vm", "v"], "output"),
    (["download", "e", "--vm", "v", "--output", "/nonexistent/dir/x"], "output"),
    (["download", "e", "--vm", "v", "--output", "/"], "output"),
    (["download", "e", "--vm", "v", "--manifest", "--output", "x"], "manifest"),
    (["download", "e", "--vmtemplate", "t", "--output", "x"], "vmtemplate")])
def test_what_it_refuses_before_making_anything(argv: list[str], field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parsed(*argv)
    assert refused.value.field == field


@pytest.mark.parametrize("argv", [["download", "e", "--vm", "v", "--pvc", "p", "--output", "x"],
                                  ["download", "e", "--vm", "v", "--keep-vme", "--delete-vme", "--output", "x"],
                                  ["download", "e", "--vm", "v", "--format", "vmdk", "--output", "x"]])
def test_argparse_refuses_what_virtctl_refuses(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["vmexport", *argv])


def test_the_volume_exported() -> None:
    assert exportcmd.chosen(["data"], None, "vm/v") == "data"
    assert exportcmd.chosen(["data", "root"], "root", "vm/v") == "root"
    for volumes, asked, code in ((["data", "root"], None, Code.BAD_REQUEST), (["data"], "root", Code.NOT_FOUND),
                                 ([], None, Code.BAD_REQUEST)):
        with pytest.raises(ApiError) as refused:
            exportcmd.chosen(volumes, asked, "vm/v")
        assert refused.value.code is code and refused.value.field == "volume"


async def test_the_file_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "snap.qcow2"
    snapshot.write_bytes(b"QFI\xfb" + b"\0" * 100)  # as stored; qcow2 is written without qemu-img
    await exportcmd.write(snapshot, "qcow2", tmp_path / "out.qcow2")
    assert (tmp_path / "out.qcow2").read_bytes()[:4] == b"QFI\xfb"

    async def broken(*args: str) -> None:  # qemu-img failing midway: nothing at the output's name
        Path(args[-1]).write_bytes(b"half")
        raise ApiError(Code.INTERNAL, "qemu-img convert: No space left on device")

    monkeypatch.setattr(exportcmd, "_qemu_img", broken)
    snapshot.write_bytes(b"QFI\xfb")
    for fmt in ("raw", "gzip"):
        with pytest.raises(ApiError):
            await exportcmd.write(snapshot, fmt, tmp_path / f"out.{fmt}")
        assert not (tmp_path / f"out.{fmt}").exists() and not (tmp_path / f".out.{fmt}.part").exists()

    async def converts(*args: str) -> None:
        Path(args[-1]).write_bytes(b"raw disk")

    monkeypatch.setattr(exportcmd, "_qemu_img", converts)
    await exportcmd.write(snapshot, "gzip", tmp_path / "out.gz")
    assert gzip.decompress((tmp_path / "out.gz").read_bytes()) == b"raw disk"
