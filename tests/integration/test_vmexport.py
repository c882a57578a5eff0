"""``virtbus vmexport download`` against a real nats-server, the api service on the bus and the nodes'
real volume work (qemu-img): a VM's volume, a PVC and a kept snapshot come to a local file whose disk
is byte for byte the volume's, gzipped, raw or qcow2; what the export made is deleted afterwards
unless kept; refusals make nothing."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from ctl import cli, exportcmd
from ctl.client import ApiClient
from proto.errors import ApiError, Code
from proto.state import VolumePhase
from servicekit.paths import volume_path
from servicekit.store import Store
from tests.integration import test_snapshots
from tests.integration.test_snapshots import Cluster, _is, until, volume_phase, write_pattern

pytestmark = pytest.mark.integration
cluster = test_snapshots.cluster  # the fixture: a real nats-server, two nodes' volume work, the API

VM = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"},
      "spec": {"running": False, "template": {"spec": {
          "domain": {"resources": {"requests": {"memory": "64Mi"}},
                     "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}},
                                           {"name": "data", "disk": {"bus": "virtio"}}]}},
          "volumes": [{"name": "root", "persistentVolumeClaim": {"claimName": "root"}},
                      {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}}}}


def raw_of(qcow2: Path, tmp: Path) -> bytes:
    out = tmp / f"{qcow2.name}.expected.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(out)], check=True)
    return out.read_bytes()


def image_format(path: Path) -> str:
    info = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True)
    return str(json.loads(info.stdout)["format"])


async def export(client: ApiClient, *argv: str) -> None:
    args = cli.parser().parse_args(["vmexport", "download", *argv])
    assert await exportcmd.run(client, args) == 0


async def leftovers(admin: Store) -> list[str]:
    return sorted([e.key for e in await admin.snapshots.items()] + [e.key for e in await admin.vm_snapshots.items()])


async def test_a_volume_comes_to_a_local_file_as_it_was(cluster: Cluster, api: Store, nats_url: str,
                                                        tmp_path: Path) -> None:
    capi, admin = cluster.api, cluster.admin
    for name in ("root", "data"):
        await capi.volumes.create(json.dumps({"name": name, "size": "32Mi", "node": "node1"}).encode())

        async def ready(name: str = name) -> bool:
            return await _is(volume_phase(admin, name), VolumePhase.READY)

        await until(f"{name} Ready", ready)
    await capi.vm_create(json.dumps(VM).encode())
    files = {n: volume_path(cluster.dirs["node1"], (await admin.volumes.require(n, "volume")).value)
             for n in ("root", "data")}
    write_pattern(files["data"], b"\x5a" * 4096, 0)  # what the guest wrote, at both ends of the disk
    write_pattern(files["data"], b"\xa5" * 4096, 32 * 2**20 - 4096)
    write_pattern(files["root"], b"\x11" * 512, 0)
    data = raw_of(files["data"], tmp_path)
    client = await ApiClient.connect(nats_url)
    try:
        # a VM's volume, gzipped (virtctl's default): the disk exactly, and the VM snapshot it took gone
        await export(client, "e1", "--vm", "vm1", "--volume", "data", "--output", str(tmp_path / "data.img.gz"))
        assert gzip.decompress((tmp_path / "data.img.gz").read_bytes()) == data
        assert await leftovers(admin) == []

        # a PVC, raw; then qcow2 as stored (virtctl's --vm=NAME spelling)
        await export(client, "e2", "--pvc=root", "--format=raw", f"--output={tmp_path / 'root.img'}")
        assert (tmp_path / "root.img").read_bytes() == raw_of(files["root"], tmp_path)
        await export(client, "e3", "--vm=vm1", "--volume=data", "--format=qcow2", f"--output={tmp_path / 'd.qcow2'}")
        assert image_format(tmp_path / "d.qcow2") == "qcow2" and raw_of(tmp_path / "d.qcow2", tmp_path) == data
        assert await leftovers(admin) == []

        # --keep-vme keeps the VM snapshot, named for the export; a later download reads it, and it stays
        await export(client, "kept", "--vm", "vm1", "--volume", "data", "--keep-vme", "--format", "raw",
                     "--output", str(tmp_path / "first.img"))
        write_pattern(files["data"], b"\x77" * 4096, 0)  # the guest goes on; the snapshot does not
        await export(client, "again", "--snapshot", "kept", "--volume", "data", "--format", "raw",
                     "--output", str(tmp_path / "second.img"))
        assert (tmp_path / "first.img").read_bytes() == (tmp_path / "second.img").read_bytes() == data
        assert (await admin.vm_snapshots.get("kept")) is not None
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left

        # refusals: typed, naming the field, and nothing made or written
        before = await leftovers(admin)
        for argv, code, field in (
                (["x1", "--vm", "vm1", "--output", str(tmp_path / "x")], Code.BAD_REQUEST, "volume"),  # two volumes
                (["x2", "--vm", "vm1", "--volume", "nope", "--output", str(tmp_path / "x")], Code.NOT_FOUND, "volume"),
                (["x3", "--pvc", "nope", "--output", str(tmp_path / "x")], Code.NOT_FOUND, None),
                (["x4", "--vm", "vm1", "--volume", "data"], Code.BAD_REQUEST, "output"),
                (["x5", "--output", str(tmp_path / "x")], Code.BAD_REQUEST, "vm"),
                (["x6", "--vm", "vm1", "--output", str(tmp_path / "no" / "x")], Code.BAD_REQUEST, "output"),
                (["x7", "--vm", "vm1", "--manifest", "--output", str(tmp_path / "x")], Code.BAD_REQUEST, "manifest"),
                (["../x8", "--pvc", "root", "--output", str(tmp_path / "x")], Code.INVALID, "name")):
            with pytest.raises(ApiError) as refused:
                await export(client, *argv)
            assert refused.value.code is code, (argv, refused.value)
            if field is not None:
                assert refused.value.field == field, (argv, refused.value)
        with pytest.raises(ApiError) as refused:
            await exportcmd.run(client, cli.parser().parse_args(["vmexport", "create", "y", "--vm", "vm1"]))
        assert refused.value.field == "verb"
        assert await leftovers(admin) == before
        assert not (tmp_path / "x").exists()
    finally:
        await client.close()
