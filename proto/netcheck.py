"""The checks of every value that becomes part of a route, an ``ip`` argument or an nftables rule.

The API applies them before it stores a value, the store again when a value is read back, and the
pure composers once more right before a value becomes text for ``ip`` or ``nft``: whatever wrote the
KV entry, only an address, a port, a protocol or an interface name of the expected form gets through.
Each raises ApiError(INVALID) naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from proto import ipam
from proto.errors import ApiError, Code
from proto.subjects import is_dns1123_label

PROTOCOLS = ("TCP", "UDP")
NODE_PORT_RANGE = range(30000, 32768)  # Kubernetes' default NodePort range
POD_BRIDGE = "vbpods"  # the node's pod bridge: never a secondary network's
# Linux allows 15 bytes other than '/', whitespace and NUL; we take a conservative subset, and no
# leading '-', which ip(8) and nft would read as an option.
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")  # a spec may give one in capitals
_IFNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
# Not a place for anyone's route: this host, link-local, multicast, "this network", broadcast.
_RESERVED = [IPv4Network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3")]


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def ipv4(value: object, field: str) -> IPv4Address:
    """An IPv4 address written the canonical way (no leading zeros, no spaces, nothing after it)."""
    if isinstance(value, IPv4Address):
        return value
    if not isinstance(value, str):
        raise _invalid(field, f"{value!r} is not an IPv4 address")
    try:
        address = IPv4Address(value)
    except ValueError:
        raise _invalid(field, f"{value!r} is not an IPv4 address") from None
    if str(address) != value:
        raise _invalid(field, f"{value!r} is not written as an IPv4 address is ({address})")
    return address


def host_address(value: object, field: str) -> IPv4Address:
    """An address a host may hold: not reserved (loopback, link-local, multicast, 0/8, broadcast)."""
    address = ipv4(value, field)
    if any(address in net for net in _RESERVED):
        raise _invalid(field, f"{address} is not a host address (loopback, link-local, multicast or reserved)")
    return address


def reserved_overlap(subnet: IPv4Network) -> IPv4Network | None:
    """The reserved range ``subnet`` overlaps, if any: no secondary network may route those."""
    return next((net for net in _RESERVED if subnet.overlaps(net)), None)


def ifname(value: object, field: str) -> str:
    if not isinstance(value, str) or not _IFNAME.fullmatch(value):
        raise _invalid(field, f"{value!r} is not an interface name (1-15 of A-Za-z0-9_.-, not starting with "
                              "'-' or '.')")
    return value


def pod_cidr(value: object, field: str) -> IPv4Network:
    """A node's pod network: one /24 of the cluster CIDR, nothing else (``default`` least of all)."""
    if not isinstance(value, str):
        raise _invalid(field, f"{value!r} is not a pod CIDR")
    try:
        net = IPv4Network(value)
    except ValueError:
        raise _invalid(field, f"{value!r} is not a pod CIDR (a /{ipam.NODE_PREFIX} of {ipam.CLUSTER_CIDR})") from None
    if str(net) != value or net.prefixlen != ipam.NODE_PREFIX or not net.subnet_of(ipam.CLUSTER_CIDR):
        raise _invalid(field, f"{value!r} is not a pod CIDR (a /{ipam.NODE_PREFIX} of {ipam.CLUSTER_CIDR})")
    return net


def protocol(value: object, field: str) -> str:
    if value not in PROTOCOLS:
        raise _invalid(field, f"protocol {value!r} is not TCP or UDP")
    assert isinstance(value, str)
    return value


def port(value: object, field: str) -> int:
    # bool is an int to Python; True is not port 1
    if type(value) is not int or not 1 <= value <= 65535:
        raise _invalid(field, f"port {value!r} is not between 1 and 65535")
    return value


def vlan_id(value: object, field: str) -> int:
    """An 802.1Q VLAN ID: 0 and 4095 are reserved; bool is no ID."""
    if type(value) is not int or not 1 <= value <= 4094:
        raise _invalid(field, f"vlan {value!r} is not a VLAN ID (1-4094)")
    return value


def node_port(value: object, field: str) -> int:
    if type(value) is not int or value not in NODE_PORT_RANGE:
        raise _invalid(field, f"node port {value!r} is outside {NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}")
    return value


def check_bridge(network: str, bridge: str, allowed: Iterable[str]) -> None:
    """A secondary network may use only a bridge the node's operator allowed, never the pod bridge
    or the node's uplink (which an operator does not list)."""
    allowed = frozenset(allowed)
    if bridge not in allowed or bridge == POD_BRIDGE:
        listed = ", ".join(sorted(allowed)) or "none"
        raise ApiError(Code.INVALID, f"network {network} uses bridge {bridge!r}, which this node does not "
                       f"allow (its --allowed-bridge: {listed})", "spec.bridge")


def check_ovs_bridge(network: str, bridge: str, ovs_bridges: Iterable[str]) -> None:
    """An ovs network needs its Open vSwitch bridge on the node (ovs-cni does not make one)."""
    found = frozenset(ovs_bridges)
    if bridge not in found:
        listed = ", ".join(sorted(found)) or "none: no Open vSwitch here"
        raise ApiError(Code.INVALID, f"network {network} uses Open vSwitch bridge {bridge!r}, which this node "
                       f"does not have (its OVS bridges: {listed})", "spec.bridge")


def interface_status(name: str, ip_address: str | None, ip_addresses: list[str], mac: str | None,
                     field: str) -> None:
    """A VMI interface's status (what its node reported): a name of a spec, host addresses (they become
    node-port and floating-IP rules), a MAC."""
    if not is_dns1123_label(name):
        raise _invalid(f"{field}.name", f"interface name {name!r} must be a DNS-1123 label")
    if ip_address is not None:
        host_address(ip_address, f"{field}.ipAddress")
    for j, address in enumerate(ip_addresses):
        host_address(address, f"{field}.ipAddresses[{j}]")
    if mac is not None and not _MAC.fullmatch(mac):
        raise _invalid(f"{field}.mac", f"{mac!r} is not a MAC address")
