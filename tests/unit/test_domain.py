import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from launcher.domain import VNC_SOCKET, compose_domain_xml, plan_domain, stable_mac
from proto.manifest import parse_manifest
from proto.spec import Cpu, VMSpec
from tests.conftest import EXAMPLES


def seed_plan(kind: str = "qemu") -> ET.Element:
    spec = parse_manifest((EXAMPLES / "testvm-masquerade.yaml").read_bytes())
    assert isinstance(spec, VMSpec)
    plan = plan_domain(spec, uid="0b6c5f4e-1111-4222-8333-444455556666", domain_type=kind,  # type: ignore[arg-type]
                       disk_paths={"containerdisk": ("/v/containerdisk.qcow2", "qcow2"),
                                   "cloudinitdisk": ("/v/cidata.iso", "raw")},
                       taps={"default": "tap0"}, serial_log="/v/serial.log")
    return ET.fromstring(compose_domain_xml(plan))


def test_seed_testvm_domain_under_tcg() -> None:
    dom = seed_plan()
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "testvm"
    assert dom.find("memory").get("unit") == "KiB" and dom.findtext("memory") == "62500"  # type: ignore[union-attr]
    assert dom.findtext("vcpu") == "1"
    assert dom.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]
    assert dom.find("cpu/model").text == "qemu64"  # type: ignore[union-attr]
    assert dom.findtext("on_poweroff") == "destroy"
    assert dom.find("features/acpi") is not None


def test_disks_in_order_first_boots_cloud_init_read_only() -> None:
    disks = seed_plan().findall("devices/disk")
    assert [(d.find("source").get("file"), d.find("target").get("dev"), d.find("driver").get("type"))  # type: ignore[union-attr]
            for d in disks] == [("/v/containerdisk.qcow2", "vda", "qcow2"), ("/v/cidata.iso", "vdb", "raw")]
    assert disks[0].find("boot").get("order") == "1"  # type: ignore[union-attr]
    assert disks[0].find("readonly") is None and disks[1].find("readonly") is not None


def test_nic_on_the_pods_tap_with_a_stable_mac() -> None:
    nic = seed_plan().find("devices/interface")
    assert nic is not None and nic.get("type") == "ethernet"
    assert (nic.find("target").get("dev"), nic.find("target").get("managed")) == ("tap0", "no")  # type: ignore[union-attr]
    mac = nic.find("mac").get("address")  # type: ignore[union-attr]
    assert mac == stable_mac("0b6c5f4e-1111-4222-8333-444455556666", "default")
    assert mac is not None and mac.startswith("02:") and len(mac.split(":")) == 6
    assert stable_mac("other-uid", "default") != mac


def test_serial_console_logged() -> None:
    serial = seed_plan().find("devices/serial")
    assert serial is not None and serial.get("type") == "unix"
    assert serial.find("source").get("mode") == "bind"  # type: ignore[union-attr]
    assert serial.find("log").get("file") == "/v/serial.log"  # type: ignore[union-attr]


def test_kvm_passes_the_host_cpu_through() -> None:
    dom = seed_plan("kvm")
    assert dom.get("type") == "kvm" and dom.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


def test_a_guest_panic_reaches_libvirt_and_ends_the_domain() -> None:
    dom = seed_plan()
    assert [p.get("model") for p in dom.findall("devices/panic")] == ["isa"]
    assert dom.findtext("on_crash") == "destroy"


def test_a_vnc_screen_on_a_unix_socket_never_a_port() -> None:
    dom = seed_plan()
    graphics = dom.findall("devices/graphics")
    assert [g.get("type") for g in graphics] == ["vnc"]
    assert graphics[0].get("port") is None and graphics[0].get("autoport") is None
    listens = graphics[0].findall("listen")
    assert [(listen.get("type"), listen.get("socket")) for listen in listens] == [("socket", VNC_SOCKET)]
    assert [m.get("type") for m in dom.findall("devices/video/model")] == ["vga"]


def test_tcg_translation_cache_is_bounded_and_nics_carry_no_option_rom() -> None:
    dom = seed_plan()
    cache = dom.find("features/tcg/tb-cache")
    assert cache is not None and (cache.text, cache.get("unit")) == ("6", "MiB")
    assert [r.get("enabled") for r in dom.findall("devices/interface/rom")] == ["no"]
    assert [v.get("vram") for v in dom.findall("devices/video/model")] == ["1024"]  # KiB, not QEMU's 16 MiB
    qemu = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    assert [(e.get("name"), e.get("value")) for e in dom.findall(f"{qemu}commandline/{qemu}env")] == [
        ("MALLOC_ARENA_MAX", "1")]
    assert seed_plan("kvm").find("features/tcg") is None  # a KVM guest has no translation cache


def machine_args(dom: ET.Element) -> list[str | None]:
    qemu = "{http://libvirt.org/schemas/domain/qemu/1.0}"
    return [a.get("value") for a in dom.findall(f"{qemu}commandline/{qemu}arg")]


def test_q35_builds_no_sata_or_smbus_controller_the_vm_does_not_use() -> None:
    assert machine_args(seed_plan()) == ["-machine", "sata=off,smbus=off"]  # virtio disks only


def test_every_vcpu_runs_sched_idle_from_its_start() -> None:
    for kind in ("qemu", "kvm"):
        sched = seed_plan(kind).findall("cputune/vcpusched")
        assert [(s.get("vcpus"), s.get("scheduler")) for s in sched] == [("0-0", "idle")]
    spec = VMSpec(name="big", memory="64Mi", cpu=Cpu(cores=2, sockets=2, threads=1))
    plan = plan_domain(spec, uid="u", domain_type="qemu", disk_paths={}, taps={}, serial_log="/v/s.log")
    dom = ET.fromstring(compose_domain_xml(plan))
    assert dom.findtext("vcpu") == "4" and dom.find("cputune/vcpusched").get("vcpus") == "0-3"  # type: ignore[union-attr]


@pytest.mark.skipif(not (shutil.which("virt-xml-validate") and shutil.which("xmllint")),
                    reason="libvirt's schema checker (virt-xml-validate, xmllint) is not installed")
def test_libvirt_schema_accepts_the_seed_domain(tmp_path: Path) -> None:
    path = tmp_path / "domain.xml"
    path.write_text(ET.tostring(seed_plan(), encoding="unicode"))
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
