"""``virtbus delete -f FILE`` against a real api service, as kubectl's: every object the file applied
goes, last first (the VM before the network it sits on), each said; one already gone is an error
(exit 1, the rest still deleted) unless --ignore-not-found; and ``get|delete net-attach-def``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ctl import cli, getcmd, lifecyclecmd, manifestcmd
from ctl.client import ApiClient
from proto import subjects
from proto.spec import NetworkAttachment
from proto.state import Service
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration

FILES = ("multus-br.yaml", "testvm-2-secondary.yaml", "testvm-service.yaml")


def delete_args(argv: list[str]) -> argparse.Namespace:
    return cli.kubectl_forms(cli.parser().parse_args(["delete", *argv]))


async def test_delete_file_deletes_what_apply_made_last_first(
        api: Store, nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text("\n---\n".join((REPO / "examples" / f).read_text() for f in FILES))
    client = await ApiClient.connect(nats_url)
    try:
        assert await manifestcmd.cmd_apply(client, argparse.Namespace(file=str(manifest))) == 0
        assert await api.vms.get("testvm-2") is not None
        capsys.readouterr()
        await getcmd.run(client, argparse.Namespace(kind="net-attach-def", name=None, output=None, watch=False,
                                                     selector=""))
        listed = capsys.readouterr().out.splitlines()
        assert listed[0].split() == ["NAME", "TYPE", "BRIDGE", "VLAN", "SUBNET"]
        assert listed[1].split()[:5] == ["multus-br", "bridge", "multus-bridge", "<none>", "192.168.100.0/24"]

        assert await lifecyclecmd.cmd_delete(client, delete_args(["-f", str(manifest)])) == 0
        said = capsys.readouterr()
        order = [said.out.find(text) for text in ("service/testvm-http deleted", "VM testvm-2 deleted",
                                                  "network multus-br deleted")]
        assert -1 not in order and order == sorted(order) and said.err == "", said
        assert not await api.vms.items()
        assert not await api.bucket(subjects.BUCKET_SERVICES, Service).items()
        assert not await api.bucket(subjects.BUCKET_NETWORKS, NetworkAttachment).items()

        # all gone now: each is an error, every one still tried, exit 1
        assert await lifecyclecmd.cmd_delete(client, delete_args(["-f", str(manifest)])) == 1
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 3 and all("NotFound" in e for e in errors), errors
        assert await lifecyclecmd.cmd_delete(client, delete_args(["-f", str(manifest), "--ignore-not-found"])) == 0
        assert await lifecyclecmd.cmd_delete(client, delete_args(["vm", "nothere", "--ignore-not-found"])) == 0
    finally:
        await client.close()


async def test_kinds_with_a_delete_of_their_own_never_delete_a_vm_of_their_name(
        api: Store, nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kinds = tmp_path / "kinds.yaml"
    kinds.write_text("\n---\n".join((REPO / "examples" / f).read_text()
                                     for f in ("instancetype-tiny.yaml", "preference-virtio.yaml")))
    vm = tmp_path / "vm.yaml"
    vm.write_text((REPO / "examples" / "testvm-masquerade.yaml").read_text().replace("name: testvm\n",
                                                                                  "name: tiny\n", 1))
    client = await ApiClient.connect(nats_url)
    try:
        for path in (kinds, vm):
            assert await manifestcmd.cmd_apply(client, argparse.Namespace(file=str(path))) == 0
        assert await api.vms.get("tiny") is not None
        capsys.readouterr()
        assert await lifecyclecmd.cmd_delete(client, delete_args(["-f", str(kinds)])) == 0
        said = capsys.readouterr().out
        assert "instancetype tiny deleted" in said and "virtio-cores" in said, said
        assert await api.vms.get("tiny") is not None  # the VM of the instancetype's name is still there
        assert await lifecyclecmd.cmd_delete(client, delete_args(["-f", str(kinds)])) == 1  # gone: NotFound each
        assert capsys.readouterr().err.count("NotFound") == 2
    finally:
        await client.close()
