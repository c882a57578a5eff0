"""OS plumbing of a launcher: its pod network namespace, a tap in it, and a private mount
namespace in which a libvirtd of its own finds its own /etc/libvirt, /run/libvirt and /var/lib/libvirt.

Python 3.11 has no os.unshare/os.setns: libc through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from pathlib import Path

from proto.errors import Code
from servicekit import netns_sysctl
from servicekit.netlink import KernelNetlink, NetlinkError, NetnsAdapter

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
PRIVATE_DIRS = ("/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt")

_libc = ctypes.CDLL(None, use_errno=True)

QEMU_CONF = """# written by the virtbus launcher: one private libvirtd per VM, QEMU as root, no host policy
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = []
cgroup_controllers = []
stdio_handler = "file"
"""
# One client (its launcher) and one domain: a few workers, not libvirtd's 5 to 20 (+5 priority, +5
# admin), each with a thread stack and a malloc arena of its own. No keepalive: the launcher learns of
# libvirtd's loss from its socket's end, and the pings woke both every 5 s, idle or not.
LIBVIRTD_CONF = """# written by the virtbus launcher
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
min_workers = 1
max_workers = 4
prio_workers = 1
admin_max_workers = 1
keepalive_interval = -1
"""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {target}")


def write_libvirt_config(etc_dir: Path) -> None:
    """The private /etc/libvirt: what a libvirtd with only the QEMU driver reads (its own and QEMU's
    settings), and ``qemu/`` for the domain it defines. Nothing of the host's: no default network
    (the pod network is ours), no nwfilter rules, no hooks. Copying the host's whole tree, 37 files
    on Debian, had cost each launch 6.5 ms of CPU."""
    if etc_dir.exists():
        shutil.rmtree(etc_dir)
    (etc_dir / "qemu").mkdir(parents=True)
    (etc_dir / "qemu.conf").write_text(QEMU_CONF)
    (etc_dir / "libvirtd.conf").write_text(LIBVIRTD_CONF)


def enter_private_mounts(etc_dir: Path, cache_dir: Path) -> None:
    """Unshare this process's mount namespace (before any thread exists) and give it libvirt dirs
    of its own. Nothing mounted here is seen by the host; the host's mounts still reach us.
    cache_dir, shared by the node's launchers, keeps libvirt's probe of QEMU's capabilities."""
    write_libvirt_config(etc_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for d in (*PRIVATE_DIRS, "/etc/libvirt"):
        os.makedirs(d, exist_ok=True)  # mount points; empty on the host
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_SLAVE)
    for d in PRIVATE_DIRS:
        _mount("tmpfs", d, "tmpfs", 0, "mode=0755")
    _mount(str(cache_dir), "/var/cache/libvirt", None, MS_BIND)
    for sub in ("/var/lib/libvirt/qemu", "/var/log/libvirt/qemu", "/var/cache/libvirt/qemu"):
        os.makedirs(sub, exist_ok=True)
    _mount(str(etc_dir), "/etc/libvirt", None, MS_BIND)


def create_netns(name: str, netns_adapter: NetnsAdapter = KernelNetlink) -> None:
    """The pod's namespace, with lo up. Made by this thread, which comes back (servicekit.netns_names):
    this process stays where it is and single-threaded, for enter_private_mounts. OSError if it cannot be made,
    which the launcher's start reports."""
    try:
        netns_adapter(None).create_netns(name)
    except NetlinkError as exc:
        if exc.code is not Code.ALREADY_EXISTS:  # a launcher run again finds its namespace
            raise OSError(exc.errno, exc.message) from exc
    with contextlib.suppress(NetlinkError):  # as before: a namespace whose lo stays down still starts
        netns_adapter(name).set_up("lo")
    # Where br_netfilter is loaded (Debian hosts with Docker, this CI), frames crossing the pod's own
    # bridges would also pass the IP hooks: a guest reaching its own pod IP would then be DNATed
    # *while bridged* and dropped on the port it came in by (no hairpin on the tap). Every rule in
    # the pod is for routed traffic, so the pod's bridges stay plain L2. No such keys: no module.
    with contextlib.suppress(OSError):  # as before (sysctl -e, its failure ignored)
        netns_sysctl.write(name, BRIDGE_NF_OFF, missing_ok=True)


BRIDGE_NF_OFF = ("net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0",
                 "net.bridge.bridge-nf-call-arptables=0")


def delete_netns(name: str, netns_adapter: NetnsAdapter = KernelNetlink) -> None:
    """Best effort, as before: a namespace left behind is removed by the handler once the launcher is gone."""
    with contextlib.suppress(NetlinkError):
        netns_adapter(None).delete_netns(name)


def create_tap(netns: str, name: str, netns_adapter: NetnsAdapter = KernelNetlink) -> None:
    """The guest's tap, up; one already there (a launcher run again) is used as it is."""
    pod = netns_adapter(netns)
    try:
        pod.create_tap(name)
    except NetlinkError as exc:
        if exc.code is not Code.ALREADY_EXISTS:
            raise
    with contextlib.suppress(NetlinkError):  # ignored as before: each binding brings its tap up again
        pod.set_up(name)
