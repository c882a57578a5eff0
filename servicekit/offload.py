"""Checksum offload off on a veth end (``ethtool -K IF tx off``, by its ioctl; no ethtool binary).

Open vSwitch's userspace datapath (``datapath_type=netdev``, what a node without the openvswitch
kernel module runs) reads and writes frames through packet sockets: a frame whose checksum the
sender left to the "hardware" (CHECKSUM_PARTIAL, the rule on veths and a virtio guest's tap) goes
through it with that checksum unfilled, and the receiver drops it (UDP: DHCP; TCP). With transmit
checksumming off on the veth ends around the switch, the kernel fills it in before the frame leaves.
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

from servicekit import netns_socket

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17  # struct ethtool_value {u32 cmd; u32 data}


def tx_checksum_off(netns: str | None, ifname: str) -> None:
    """Blocking (it enters netns in this thread for a moment). Raises OSError if the link is not there."""
    sock = netns_socket.socket_in(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with sock:
        value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0), 8)
        request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value))
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)
