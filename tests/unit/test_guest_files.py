"""Static checks of the test guest's sources (guest/), and its udhcpc script run against stub tools.

Building and booting the guest is guest/build.sh + guest/smoke.py (minutes); these take < 1 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

GUEST = Path(__file__).resolve().parents[2] / "guest"
ROOTFS = GUEST / "rootfs"
SCRIPTS = [
    ROOTFS / "init",
    ROOTFS / "etc/www.sh",
    ROOTFS / "etc/udhcpc/default.script",
    ROOTFS / "etc/acpi/PWRF/00000080",
]

# What the guest needs from the kernel (tinyconfig drops what it cannot satisfy; build.sh checks)
WANTED_KERNEL_OPTIONS = """
    64BIT PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT
    PROC_FS SYSFS DEVTMPFS DEVTMPFS_MOUNT NET INET PACKET UNIX PCI VIRTIO VIRTIO_PCI VIRTIO_NET
    NETDEVICES NET_CORE BLOCK BLK_DEV VIRTIO_BLK ACPI INPUT INPUT_EVDEV ACPI_BUTTON UNIX98_PTYS
""".split()


def test_build_script_is_strict_executable_bash() -> None:
    build = GUEST / "build.sh"
    assert os.access(build, os.X_OK)
    text = build.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    subprocess.run(["bash", "-n", str(build)], check=True)


def test_kernel_fragment_wants_every_needed_option() -> None:
    wanted = set(re.findall(r"^CONFIG_(\w+)=y$", (GUEST / "kernel.config").read_text(), re.M))
    assert not set(WANTED_KERNEL_OPTIONS) - wanted


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOTFS)))
def test_guest_scripts_are_executable_sh(script: Path) -> None:
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_init_starts_the_services_and_prints_the_marker() -> None:
    init = (ROOTFS / "init").read_text()
    for needle in ["mount -a", "mount -t devpts devpts /dev/pts", "acpid", "httpd -h /var/www -p 80",
                   "nc -ll -p 7 -e /bin/cat", "for dev in /sys/class/net/eth*", "udhcpc -f -i \"$ifname\"",
                   "VIRTBUS-GUEST-READY", "exec /bin/busybox init"]:
        assert needle in init
    assert "ttyS0::respawn:-/bin/sh" in (ROOTFS / "etc/inittab").read_text()
    assert "poweroff -f" in (ROOTFS / "etc/acpi/PWRF/00000080").read_text()


def test_fstab_mounts_what_init_and_the_tests_read() -> None:
    """`mount -a` (/init) mounts /proc, /sys (/sys/class/net) and devtmpfs on /dev (/dev/vdb...)."""
    entries = [line.split() for line in (ROOTFS / "etc/fstab").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert all(len(fields) == 6 for fields in entries)
    assert {(fields[1], fields[2]) for fields in entries} == {
        ("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "devtmpfs")}


def test_initramfs_is_left_uncompressed_as_the_kernel_expects() -> None:
    """The kernel has no initramfs decompressor (kernel.config), so build.sh must not compress it."""
    config = (GUEST / "kernel.config").read_text()
    assert not re.findall(r"^CONFIG_RD_\w+=y$", config, re.M)
    build = (GUEST / "build.sh").read_text()
    assert re.search(r'gen_init_cpio" -t 0 "\$tmp/initramfs.list" >"\$out/initrd.cpio"', build)
    assert "INITRD /initrd.cpio" in build


def run_udhcpc_script(tmp_path: Path, event: str, **env: str) -> tuple[list[str], Path]:
    """Runs the udhcpc script under dash with stub `ip`/`hostname`; returns the stub calls and dir."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for tool in ["ip", "hostname"]:
        stub = stubs / tool
        # `hostname` with no argument prints the current one; `ip ... show` prints nothing
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >>"{calls}"\n'
                        + ('[ $# -eq 0 ] && echo virtbus-guest\n' if tool == "hostname" else "") + "exit 0\n")
        stub.chmod(0o755)
    www = tmp_path / "www.sh"
    www.write_text(f'#!/bin/sh\necho "www.sh" >>"{calls}"\n')
    www.chmod(0o755)
    base = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "RESOLV_CONF": str(tmp_path / "resolv.conf"),
        "CONSOLE": str(tmp_path / "console"),
        "WWW_SH": str(www),
        "interface": "vbtest9",  # a name no host has, should a stub ever be bypassed
    }
    dash = shutil.which("dash") or "sh"
    subprocess.run([dash, str(ROOTFS / "etc/udhcpc/default.script"), event], env=base | env, check=True,
                   capture_output=True)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return lines, tmp_path


def test_udhcpc_bound_configures_address_mtu_route_dns_hostname(tmp_path: Path) -> None:
    calls, d = run_udhcpc_script(tmp_path, "bound", ip="10.0.2.15", mask="24", subnet="255.255.255.0",
                                 router="10.0.2.1 10.0.2.254", dns="10.0.2.3 10.0.2.4", domain="example.test",
                                 mtu="1400", hostname="vm1", broadcast="10.0.2.255")
    assert "ip link set vbtest9 mtu 1400" in calls
    assert "ip -4 addr add 10.0.2.15/24 broadcast 10.0.2.255 dev vbtest9" in calls
    assert "ip -4 route add default via 10.0.2.1 dev vbtest9" in calls  # the first router only
    assert "hostname vm1" in calls and "www.sh" in calls
    assert (d / "resolv.conf").read_text() == "domain example.test\nnameserver 10.0.2.3\nnameserver 10.0.2.4\n"
    assert (d / "console").read_text() == "\nVIRTBUS-GUEST-IP 10.0.2.15\n"


def test_udhcpc_bound_on_a_slash_32_routes_onlink_and_leaves_what_dhcp_did_not_say(tmp_path: Path) -> None:
    calls, d = run_udhcpc_script(tmp_path, "bound", ip="10.1.0.7", mask="32", subnet="255.255.255.255",
                                 router="10.1.0.1")
    assert "ip -4 route add default via 10.1.0.1 dev vbtest9 onlink" in calls
    assert not any("mtu" in c for c in calls)
    assert "www.sh" not in calls
    assert not (d / "resolv.conf").exists()


def test_udhcpc_deconfig_flushes_the_interface(tmp_path: Path) -> None:
    calls, d = run_udhcpc_script(tmp_path, "deconfig")
    assert calls == ["ip link set vbtest9 up", "ip -4 addr flush dev vbtest9", "ip -4 route flush dev vbtest9"]
    assert not (d / "console").exists()


def test_www_page_names_the_host_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    for name in ("virtbus-guest", "vm1"):  # at boot, then after a lease named the host
        (tmp_path / "hostname").write_text(name + "\n")
        env = {"PATH": os.environ["PATH"], "HOSTNAME_FILE": str(tmp_path / "hostname"), "WWW": str(www)}
        subprocess.run(["sh", str(ROOTFS / "etc/www.sh")], env=env, check=True)
        page = (www / "index.html").read_text()
        assert f"<title>{name}</title>" in page and f"hostname: {name}</p>" in page
        assert [p.name for p in www.iterdir()] == ["index.html"]


# arch/x86/kernel/vmlinux.lds.S of linux-source-6.1, the lines guest/build.sh's compact_image edits and
# their neighbours it must leave: the 32-bit branch's rodata end, and the SME scratch area's alignment
LINKER_SCRIPT = (
    "#ifdef CONFIG_X86_64\n"
    "#define X86_ALIGN_RODATA_BEGIN\t. = ALIGN(HPAGE_SIZE);\n\n"
    "#define X86_ALIGN_RODATA_END\t\t\t\t\t\\\n"
    "\t\t. = ALIGN(HPAGE_SIZE);\t\t\t\t\\\n"
    "\t\t__end_rodata_hpage_align = .;\t\t\t\\\n"
    "\t\t__end_rodata_aligned = .;\n\n"
    "#define ALIGN_ENTRY_TEXT_BEGIN\t. = ALIGN(PMD_SIZE);\n"
    "#define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PMD_SIZE);\n"
    "#else\n"
    "#define X86_ALIGN_RODATA_END\t\t\t\t\t\\\n"
    "\t\t. = ALIGN(PAGE_SIZE);\t\t\t\t\\\n"
    "\t\t__end_rodata_aligned = .;\n"
    "#endif\n"
    "\t. = ALIGN(HPAGE_SIZE);\n"
    "\t.init.scratch : AT(ADDR(.init.scratch) - LOAD_OFFSET) {\n"
    "\t\t. = ALIGN(HPAGE_SIZE);\n"
    "\t}\n")


def compact_image(tree: Path) -> subprocess.CompletedProcess[str]:
    """guest/build.sh's compact_image, run alone on a source tree (its die() as build.sh has it)."""
    build = (GUEST / "build.sh").read_text()
    body = re.search(r"^compact_image\(\) \{\n.*?^\}\n", build, re.M | re.S)
    die = re.search(r"^die\(\) \{.*\}\n", build, re.M)
    assert body is not None and die is not None
    script = f"set -euo pipefail\nlog() {{ :; }}\n{die.group(0)}{body.group(0)}compact_image \"$1\"\n"
    return subprocess.run(["bash", "-c", script, "compact", str(tree)], capture_output=True, text=True)


def test_the_kernel_image_is_laid_out_with_4k_alignment_and_nothing_else_changes(tmp_path: Path) -> None:
    lds = tmp_path / "arch/x86/kernel/vmlinux.lds.S"
    lds.parent.mkdir(parents=True)
    lds.write_text(LINKER_SCRIPT)
    done = compact_image(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    before, after = LINKER_SCRIPT.splitlines(), lds.read_text().splitlines()
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert [b for b, _ in changed] == [
        "#define X86_ALIGN_RODATA_BEGIN\t. = ALIGN(HPAGE_SIZE);", "\t\t. = ALIGN(HPAGE_SIZE);\t\t\t\t\\",
        "#define ALIGN_ENTRY_TEXT_BEGIN\t. = ALIGN(PMD_SIZE);", "#define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PMD_SIZE);"]
    assert [a for _, a in changed] == [b.replace("HPAGE_SIZE", "PAGE_SIZE").replace("PMD_SIZE", "PAGE_SIZE")
                                       for b, _ in changed]


def test_a_kernel_source_laid_out_otherwise_fails_the_build_and_is_left_as_it_was(tmp_path: Path) -> None:
    lds = tmp_path / "arch/x86/kernel/vmlinux.lds.S"
    lds.parent.mkdir(parents=True)
    other = LINKER_SCRIPT.replace("#define ALIGN_ENTRY_TEXT_END\t. = ALIGN(PMD_SIZE);\n", "")
    lds.write_text(other)
    done = compact_image(tmp_path)
    assert done.returncode != 0
    assert "has no line '#define ALIGN_ENTRY_TEXT_END" in done.stdout + done.stderr
    assert lds.read_text() == other
