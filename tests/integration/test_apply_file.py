"""``virtbus apply -f FILE`` against a real api service, as kubectl's: each object of the file is
applied, one the API refuses (a kind virtbus has not, a field it cannot honour) is said with its reason
and the rest are still applied, exit 1; and a VM's machine (rng, firmware, clock, features) is kept."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from ctl import manifestcmd
from ctl.client import ApiClient
from proto.spec import Clock, Firmware, Timer
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration

POLICY = """apiVersion: kubevirt.io/v1
kind: VirtualMachineInstancePreset
metadata:
  name: example-preset
spec:
  selector:
    matchLabels:
      kubevirt.io/os: win10
  domain:
    cpu:
      cores: 2
"""


async def test_apply_says_each_refusal_and_applies_the_rest(
        api: Store, nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    efi = yaml.safe_load((REPO / "examples" / "testvm-machine.yaml").read_text())
    efi["metadata"]["name"] = "efi"
    efi["spec"]["template"]["spec"]["domain"]["firmware"] = {"bootloader": {"efi": {}}}
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text("\n---\n".join((POLICY, yaml.safe_dump(efi),
                                        (REPO / "examples" / "testvm-machine.yaml").read_text())))
    client = await ApiClient.connect(nats_url)
    try:
        capsys.readouterr()
        assert await manifestcmd.cmd_apply(client, argparse.Namespace(file=str(manifest))) == 1
        said = capsys.readouterr()
        errors = said.err.splitlines()
        assert len(errors) == 2, said
        assert "VirtualMachineInstancePreset example-preset" in errors[0]
        assert "VirtualMachineInstance," in errors[0] and "VirtualMachinePool" in errors[0]  # what it does apply
        assert "(spec.template.spec.domain.firmware.bootloader.efi)" in errors[1] and "UEFI" in errors[1]
        assert "virtualmachine/testvm-machine applied" in said.out
        assert await api.vms.get("efi") is None
        stored = await api.vms.get("testvm-machine")
        assert stored is not None
        spec = stored.value.spec
        assert spec.rng and spec.firmware == Firmware(uuid="2d6e0c3a-7c5e-4d4f-9a35-4f0c1b2a9e10",
                                                      serial="VB-0001-MACHINE")
        assert spec.clock == Clock(offset_seconds=3600, timers=[Timer(name="hpet", present=False),
                                                                Timer(name="rtc", tick_policy="catchup")])
        assert spec.features is not None and spec.features.smm
    finally:
        await client.close()
