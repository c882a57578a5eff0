"""VLAN access ports on a Linux bridge without VLAN filtering: what the bridge CNI's ``vlan`` does, on
kernels that have neither bridge ``vlan_filtering`` nor 802.1Q links (this project's CI kernel has
neither), and without changing the bridge or any other port of it.

A port made an access port of VLAN ``vid`` gets two small eBPF programs on its clsact qdisc
(``tc filter ... bpf da``):
- ingress (frames from the VM's side): an untagged frame gets the tag ``vid``; a frame that comes
  tagged is dropped, as an access port drops what it was not configured for.
- egress (frames to the VM's side): only frames tagged ``vid`` pass, untagged; every other frame,
  untagged or of another VLAN, is dropped.

The bridge itself, left unfiltering, forwards tagged frames as any others, so every other port of it
(the node's uplink among them) is a trunk of every VLAN, as an Open vSwitch port without a tag is.
A tag travels with the frame as skb metadata through veths and bridges and is written into the frame
where it leaves through a device that cannot carry it so (a tap, an uplink): on the wire it is
802.1Q. The helpers (``bpf_skb_vlan_push``/``_pop``) are in every kernel with eBPF; no tc action
module is needed (``act_vlan`` is missing from this project's CI kernel too).

The programs are assembled here (a dozen instructions each), so nothing is compiled at build time.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError as KernelError

from proto import netcheck
from proto.errors import ApiError, Code

# linux/bpf.h
SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3
HELPER_SKB_VLAN_PUSH, HELPER_SKB_VLAN_POP = 18, 19
# struct __sk_buff: len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci, ...
SKB_VLAN_PRESENT, SKB_VLAN_TCI = 20, 24
TC_ACT_OK, TC_ACT_SHOT = 0, 2
ETH_P_8021Q_BE = 0x0081  # htons(0x8100), as the helper takes it
VID_MASK = 0x0FFF
# tc's clsact qdisc: its ingress and egress hooks
CLSACT_INGRESS, CLSACT_EGRESS = "ffff:fff2", "ffff:fff3"

_INSN = struct.Struct("<BBhi")  # struct bpf_insn: code, dst:4|src:4, off, imm


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return _INSN.pack(code, (src << 4) | dst, off, imm)


def _mov_reg(dst: int, src: int) -> bytes:
    return _insn(0xBF, dst, src)  # BPF_ALU64 | BPF_MOV | BPF_X


def _mov_imm(dst: int, imm: int) -> bytes:
    return _insn(0xB7, dst, imm=imm)  # BPF_ALU64 | BPF_MOV | BPF_K


def _load_word(dst: int, src: int, off: int) -> bytes:
    return _insn(0x61, dst, src, off)  # BPF_LDX | BPF_MEM | BPF_W


def _jump_if_not(dst: int, imm: int, skip: int) -> bytes:
    return _insn(0x55, dst, off=skip, imm=imm)  # BPF_JMP | BPF_JNE | BPF_K


def _jump_if(dst: int, imm: int, skip: int) -> bytes:
    return _insn(0x15, dst, off=skip, imm=imm)  # BPF_JMP | BPF_JEQ | BPF_K


def _and_imm(dst: int, imm: int) -> bytes:
    return _insn(0x57, dst, imm=imm)  # BPF_ALU64 | BPF_AND | BPF_K


def _call(helper: int) -> bytes:
    return _insn(0x85, imm=helper)  # BPF_JMP | BPF_CALL


_EXIT = _insn(0x95)  # BPF_JMP | BPF_EXIT
_PASS = _mov_imm(0, TC_ACT_OK) + _EXIT
_DROP = _mov_imm(0, TC_ACT_SHOT) + _EXIT


def check_vid(vid: int) -> int:
    return netcheck.vlan_id(vid, "vlan")


def tag_program(vid: int) -> bytes:
    """Ingress of the access port: tag what comes untagged with ``vid``; drop what comes tagged."""
    check_vid(vid)
    return b"".join([
        _mov_reg(6, 1),  # r6 = the skb, kept across the call
        _load_word(0, 6, SKB_VLAN_PRESENT),
        _jump_if_not(0, 0, 5),  # tagged already: to the drop
        _mov_reg(1, 6),
        _mov_imm(2, ETH_P_8021Q_BE),
        _mov_imm(3, vid),
        _call(HELPER_SKB_VLAN_PUSH),
        _jump_if_not(0, 0, 2),  # the helper failed (no room for the tag): to the drop
        _PASS,
        _DROP,
    ])


def untag_program(vid: int) -> bytes:
    """Egress of the access port: pass, untagged, only what is tagged ``vid``; drop everything else."""
    check_vid(vid)
    return b"".join([
        _mov_reg(6, 1),
        _load_word(0, 6, SKB_VLAN_PRESENT),
        _jump_if(0, 0, 7),  # untagged: to the drop
        _load_word(0, 6, SKB_VLAN_TCI),
        _and_imm(0, VID_MASK),  # the VLAN ID, without the priority bits
        _jump_if_not(0, vid, 4),  # another VLAN: to the drop
        _mov_reg(1, 6),
        _call(HELPER_SKB_VLAN_POP),
        _jump_if_not(0, 0, 2),
        _PASS,
        _DROP,
    ])


def _programs(vid: int) -> list[tuple[bytes, str, str]]:
    """An access port's two programs: (code, name, the clsact hook it goes on)."""
    return [(tag_program(vid), f"vlan{vid}tag", CLSACT_INGRESS), (untag_program(vid), f"vlan{vid}untag", CLSACT_EGRESS)]


_libc = ctypes.CDLL(None, use_errno=True)
_LICENSE = b"GPL"  # the programs are this project's; the helpers they call are not GPL-only, either way


def load(program: bytes, name: str) -> int:
    """BPF_PROG_LOAD of a tc classifier program: its file descriptor (the caller closes it once a
    filter holds the program). A refusal is an ApiError with the kernel's errno and its verifier log."""
    if len(name) > 15 or not name.isascii():
        raise ApiError(Code.INVALID, f"program name {name!r} is not 1-15 ASCII characters")
    code = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(_LICENSE)
    log = ctypes.create_string_buffer(16384)
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, the BPF_PROG_LOAD part; the rest zero
    struct.pack_into("<IIQQIIQII16s", attr, 0, BPF_PROG_TYPE_SCHED_CLS, len(program) // _INSN.size,
                     ctypes.addressof(code), ctypes.addressof(license_), 1, len(log), ctypes.addressof(log),
                     0, 0, name.encode())
    fd = int(_libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, len(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        verifier = log.value.decode(errors="replace").strip().splitlines()[-3:]
        # not retryable: a kernel without eBPF, or one that refuses these programs, does so every time
        raise ApiError(Code.INVALID, f"this node's kernel refused a VLAN port program ({os.strerror(err)})"
                       + (f": {' / '.join(verifier)}" if verifier else ""))
    return fd


def attach(ipr: Any, link: str, vid: int) -> None:
    """Make ``link`` (a bridge port, in ``ipr``'s namespace: a pyroute2 IPRoute) an access port of VLAN
    ``vid``. Again on a port already made so, it replaces the programs (one clsact, one filter a hook)."""
    found = ipr.link_lookup(ifname=link)
    if not found:
        raise ApiError(Code.NOT_FOUND, f"no link {link!r} to make a VLAN access port of")
    index = found[0]
    programs = _programs(vid)
    fds: list[int] = []
    try:
        for code, name, _ in programs:
            fds.append(load(code, name))
        try:
            ipr.tc("add", "clsact", index)
        except KernelError as exc:
            if exc.code != errno.EEXIST:  # EEXIST: the link has its clsact already
                raise
        for fd, (_, name, hook) in zip(fds, programs, strict=True):
            ipr.tc("replace-filter", "bpf", index, ":1", fd=fd, name=name, parent=hook, classid=1,
                   direct_action=True, prio=1)
    finally:
        for fd in fds:
            os.close(fd)


def available() -> str | None:
    """None if this kernel loads both programs (eBPF for tc, with the VLAN helpers); else why not.
    Loading touches no link: a node's handler asks at its start and says so in its registration."""
    try:
        for code, name, _ in _programs(1):
            os.close(load(code, name))
    except ApiError as exc:
        return exc.message
    return None
