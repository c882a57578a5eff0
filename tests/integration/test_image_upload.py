"""``virtbus image-upload dv|pvc`` against a real nats-server, the api service on the bus and the nodes'
real volume work (qemu-img): a local qcow2 becomes a volume whose disk reads what the file held, made
now on the node named or left for the first VM's; what it refuses (a size that cannot hold the image,
a volume that exists, a file that is no disk image) is refused before anything is sent or made."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ctl import cli, imageupload
from ctl.client import ApiClient
from proto.api import ImageList
from proto.errors import ApiError, Code
from proto.state import VolumePhase
from servicekit.paths import volume_path
from servicekit.store import Store
from tests.integration import test_snapshots
from tests.integration.test_snapshots import Cluster, reads, write_pattern

pytestmark = pytest.mark.integration
cluster = test_snapshots.cluster  # the fixture: a real nats-server, two nodes' volume work, the API


async def upload(client: ApiClient, *argv: str) -> None:
    assert await imageupload.run(client, cli.parser().parse_args(["image-upload", *argv])) == 0


def make_disk(disk: Path) -> None:
    """A 16M qcow2 whose first and last 64 KiB hold patterns."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    write_pattern(disk, b"\x3c" * 65536, 0)
    write_pattern(disk, b"\xc3" * 65536, 16 * 2**20 - 65536)


async def images(client: ApiClient) -> list[str]:
    return sorted(i.name for i in (await client.call("image", "list", {}, ImageList)).items)


async def test_a_local_image_becomes_a_volume(cluster: Cluster, api: Store, nats_url: str, tmp_path: Path) -> None:
    admin = cluster.admin
    disk = tmp_path / "fedora.qcow2"
    make_disk(disk)
    client = await ApiClient.connect(nats_url)
    try:
        # --node: written there now, and waited for; the disk reads what the file held, in a bigger volume
        await upload(client, "dv", "fedora-dv", "--size=64Mi", f"--image-path={disk}", "--node", "node1",
                     "--insecure", "--uploadproxy-url", "https://cdi-uploadproxy.example")
        volume = (await admin.volumes.require("fedora-dv", "volume")).value
        assert volume.phase is VolumePhase.READY and volume.node == "node1" and volume.image == "upload/fedora-dv"
        path = volume_path(cluster.dirs["node1"], volume)
        assert reads(path, 0, 65536, 0x3c) and reads(path, 16 * 2**20 - 65536, 65536, 0xc3)
        assert reads(path, 16 * 2**20, 65536, 0x00)  # the rest of the 64Mi: zeros
        # no node: Pending, placed with the first VM that uses it (WaitForFirstConsumer)
        await upload(client, "pvc", "lazy", "--size", "16Mi", "--image-path", str(disk))
        lazy = (await admin.volumes.require("lazy", "volume")).value
        assert lazy.node is None and lazy.phase is VolumePhase.PENDING and lazy.image == "upload/lazy"
        assert await images(client) == ["upload/fedora-dv", "upload/lazy"]

        # refused before a byte is sent: nothing uploaded, nothing made
        text = tmp_path / "notes.txt"
        text.write_text("not a disk\n" * 100)
        for argv, code, field in (
                (["dv", "small", "--size", "8Mi", "--image-path", str(disk)], Code.INVALID, "size"),
                (["dv", "fedora-dv", "--size", "64Mi", "--image-path", str(disk)], Code.CONFLICT, "name"),
                (["dv", "gone", "--size", "64Mi", "--image-path", str(tmp_path / "nope.qcow2")], Code.INVALID,
                 "image-path"),
                (["dv", "x", "--size", "64Mi", "--image-path", str(disk), "--no-create"], Code.INVALID, "no-create"),
                (["dv", "Bad_Name", "--size", "64Mi", "--image-path", str(disk)], Code.INVALID, "name")):
            with pytest.raises(ApiError) as refused:
                await upload(client, *argv)
            assert refused.value.code is code and refused.value.field == field, (argv, refused.value)
        with pytest.raises(ApiError):
            await upload(client, "dv", "texty", "--size", "64Mi", "--image-path", str(text))
        assert await images(client) == ["upload/fedora-dv", "upload/lazy"]
        assert sorted(e.key for e in await admin.volumes.items()) == ["fedora-dv", "lazy"]
    finally:
        await client.close()
