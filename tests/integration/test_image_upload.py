"""``virtbus image upload`` against a real nats-server and the api service: what is checked goes
in with its format, virtual size and checksum on record; what is refused sends nothing."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from ctl.client import ApiClient
from ctl.imagecmd import human, upload
from proto.api import ImageList
from proto.errors import ApiError
from proto.imagefacts import Format
from servicekit.store import Store
from tests.conftest import REPO, NatsServer


@pytest.fixture
def fat_qcow2(tmp_path: Path) -> Path:
    raw = tmp_path / "disk.img"
    subprocess.run(["mkfs.vfat", "-C", "-n", "TEST", str(raw), "8192"], check=True, capture_output=True)
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    return path


async def test_an_upload_records_what_the_file_is(api: Store, fat_qcow2: Path) -> None:
    client = ApiClient(api.nc)
    facts = await upload(client, "disks/fat:1", fat_qcow2, None)
    assert facts.sha256 == hashlib.sha256(fat_qcow2.read_bytes()).hexdigest()
    [item] = (await client.call("image", "list", {}, ImageList)).items
    assert (item.name, item.format, item.size, item.virtual_size, item.sha256) == (
        "disks/fat:1", "qcow2", fat_qcow2.stat().st_size, 8 << 20, facts.sha256)
    info = await api.images.get_info("disks/fat:1")
    assert info.headers == {"Virtbus-Image-Format": ["qcow2"], "Virtbus-Image-Virtual-Size": [str(8 << 20)]}


async def test_a_refused_file_sends_nothing(api: Store, fat_qcow2: Path, tmp_path: Path) -> None:
    client = ApiClient(api.nc)
    short = tmp_path / "short.qcow2"
    short.write_bytes(fat_qcow2.read_bytes()[:-1000])
    with pytest.raises(ApiError) as caught:
        await upload(client, "short", short, None)
    assert "truncated" in caught.value.message and str(short) in caught.value.message
    with pytest.raises(ApiError) as caught:
        await upload(client, "mislabelled", fat_qcow2, Format.ISO)
    assert "--format iso was given, but the file is a qcow2 image" in caught.value.message
    assert (await client.call("image", "list", {}, ImageList)).items == []


async def cli(server: NatsServer, *args: str) -> tuple[int, str, str]:
    """The CLI in its own process, this loop free meanwhile (the api service answers on it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ctl", "--server", server.url, "--creds", server.creds("admin"), *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_cli_shows_progress_and_the_list(api: Store, nats_server: NatsServer, fat_qcow2: Path) -> None:
    code, out, err = await cli(nats_server, "image", "import", "fat", "--file", str(fat_qcow2))
    assert code == 0, err
    assert "100%" in err and "/s" in err, err
    sha = hashlib.sha256(fat_qcow2.read_bytes()).hexdigest()
    assert "image fat uploaded: qcow2" in out and f"sha256 {sha}" in out, out
    code, listed, err = await cli(nats_server, "image", "list")
    assert code == 0, err
    head, row = listed.splitlines()[:2]
    assert head.split() == ["NAME", "FORMAT", "SIZE", "VIRTUAL", "SIZE", "SHA256"], listed
    assert row.split() == ["fat", "qcow2", *human(fat_qcow2.stat().st_size).split(), "8.0", "MiB", sha], listed
    code, refused, err = await cli(nats_server, "image", "upload", "noise", "--file", str(fat_qcow2),
                                   "--format", "raw")
    assert code == 1 and "--format raw was given, but the file is a qcow2 image" in err, err
