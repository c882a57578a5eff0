"""Semantic checks of a VM spec and a network, the same for KubeVirt and native input.

Names end up as NATS subject tokens, directory names, netns and interface name parts, libvirt
domain names and shell words: only DNS-1123 labels get through.
"""

from __future__ import annotations

import re
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

from proto.errors import ApiError, Code
from proto.quantity import InvalidQuantity, parse_bytes
from proto.spec import CloudInitNoCloud, ContainerDisk, EmptyDisk, NetworkAttachment, VMSpec
from proto.subjects import is_dns1123_label

MIN_MEMORY, MAX_MEMORY = parse_bytes("16Mi"), parse_bytes("256Gi")
MIN_DISK, MAX_DISK = parse_bytes("1Mi"), parse_bytes("2Ti")
MAX_VCPUS = 64
MAX_USER_DATA = 64 * 1024
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]{0,254}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def check_name(name: str, field: str, what: str = "name") -> None:
    if not is_dns1123_label(name):
        raise invalid(field, f"{what} {name!r} must be a DNS-1123 label: lowercase letters, digits and '-', "
                             "starting and ending with a letter or digit, at most 63 characters")


def validate_image_reference(ref: str, field: str) -> None:
    if not _IMAGE_REF.match(ref) or ".." in ref or "//" in ref:
        raise invalid(field, f"{ref!r} is not an image reference (like quay.io/kubevirt/cirros-container-disk-demo)")


def _quantity(text: str, field: str, low: int, high: int, what: str) -> int:
    try:
        value = parse_bytes(text)
    except InvalidQuantity as exc:
        raise invalid(field, str(exc)) from None
    if not low <= value <= high:
        raise invalid(field, f"{what} {text} is out of range: it must be between {low // 2**20}Mi "
                             f"and {high // 2**30}Gi")
    return value


def _labels(labels: dict[str, str], field: str) -> None:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not _LABEL_PREFIX.match(prefix)) or not name or not _LABEL_VALUE.match(name):
            raise invalid(f"{field}.{key}", f"{key!r} is not a valid label key")
        if not _LABEL_VALUE.match(value):
            raise invalid(f"{field}.{key}", f"{value!r} is not a valid label value")


def _unique(names: list[str], field: str) -> None:
    for i, name in enumerate(names):
        check_name(name, f"{field}[{i}].name")
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise invalid(field, f"name {dup[0]!r} is used twice")


def validate_vm(spec: VMSpec, paths: dict[str, str] | None = None) -> VMSpec:
    """Raise ApiError(INVALID) naming the field; ``paths`` maps native field names to the caller's."""
    p = {"name": "name", "memory": "memory", "cpu": "cpu", "disks": "disks", "interfaces": "interfaces",
         "networks": "networks", "volumes": "volumes", "labels": "labels", "nodeSelector": "nodeSelector",
         "terminationGracePeriodSeconds": "terminationGracePeriodSeconds", **(paths or {})}
    check_name(spec.name, p["name"])
    _quantity(spec.memory, p["memory"], MIN_MEMORY, MAX_MEMORY, "memory")
    for part in ("cores", "sockets", "threads"):
        if getattr(spec.cpu, part) < 1:
            raise invalid(f"{p['cpu']}.{part}", f"cpu {part} must be at least 1")
    if spec.cpu.cores * spec.cpu.sockets * spec.cpu.threads > MAX_VCPUS:
        raise invalid(p["cpu"], f"at most {MAX_VCPUS} vCPUs")
    if not 0 <= spec.termination_grace_period_seconds <= 3600:
        raise invalid(p["terminationGracePeriodSeconds"], "must be between 0 and 3600")
    _labels(spec.labels, p["labels"])
    _labels(spec.node_selector, p["nodeSelector"])
    _unique([d.name for d in spec.disks], p["disks"])
    _unique([v.name for v in spec.volumes], p["volumes"])
    _unique([i.name for i in spec.interfaces], p["interfaces"])
    _unique([n.name for n in spec.networks], p["networks"])
    volumes = {v.name: v for v in spec.volumes}
    for i, disk in enumerate(spec.disks):
        if disk.name not in volumes:
            raise invalid(f"{p['disks']}[{i}].name", f"disk {disk.name!r} has no volume of that name")
    disks = {d.name for d in spec.disks}
    for i, volume in enumerate(spec.volumes):
        field = f"{p['volumes']}[{i}]"
        if volume.name not in disks:
            raise invalid(f"{field}.name", f"volume {volume.name!r} has no disk of that name")
        src = volume.source
        if isinstance(src, ContainerDisk):
            validate_image_reference(src.image, f"{field}.containerDisk.image")
        elif isinstance(src, EmptyDisk):
            _quantity(src.capacity, f"{field}.emptyDisk.capacity", MIN_DISK, MAX_DISK, "capacity")
        elif isinstance(src, CloudInitNoCloud) and len(src.user_data.encode()) > MAX_USER_DATA:
            raise invalid(f"{field}.cloudInitNoCloud.userData", f"user data is over {MAX_USER_DATA // 1024} KiB")
    networks = {n.name: n for n in spec.networks}
    for i, iface in enumerate(spec.interfaces):
        field = f"{p['interfaces']}[{i}]"
        net = networks.get(iface.name)
        if net is None:
            raise invalid(f"{field}.name", f"interface {iface.name!r} has no network of that name")
        if net.kind == "multus" and iface.binding != "bridge":
            raise invalid(f"{field}.{iface.binding}", "an interface on a multus network must use the bridge binding")
        if iface.mac_address is not None and (not _MAC.match(iface.mac_address)
                                              or int(iface.mac_address[:2], 16) & 1):
            raise invalid(f"{field}.macAddress", f"{iface.mac_address!r} is not a unicast MAC address")
        seen: set[tuple[str, int]] = set()
        for j, port in enumerate(iface.ports):
            if not 1 <= port.port <= 65535:
                raise invalid(f"{field}.ports[{j}].port", f"port {port.port} is not between 1 and 65535")
            if (port.protocol, port.port) in seen:
                raise invalid(f"{field}.ports[{j}]", f"{port.protocol} port {port.port} is listed twice")
            seen.add((port.protocol, port.port))
    ifaces = {i.name for i in spec.interfaces}
    for i, net in enumerate(spec.networks):
        field = f"{p['networks']}[{i}]"
        if net.name not in ifaces:
            raise invalid(f"{field}.name", f"network {net.name!r} has no interface of that name")
        if net.kind == "multus":
            check_name(net.network_name or "", f"{field}.multus.networkName", "network name")
    if sum(1 for n in spec.networks if n.kind == "pod") > 1:
        raise invalid(p["networks"], "at most one pod network")
    return spec


def validate_network(att: NetworkAttachment, prefix: str = "") -> NetworkAttachment:
    check_name(att.name, f"{prefix}metadata.name" if prefix else "name")
    field = f"{prefix}spec.config" if prefix else ""
    if not _IFNAME.match(att.bridge) or att.bridge in (".", ".."):
        raise invalid(f"{field}.bridge".lstrip("."),
                      f"{att.bridge!r} is not a Linux interface name (1-15 of A-Za-z0-9_.-)")
    try:
        subnet = IPv4Network(att.subnet)
    except ValueError as exc:
        raise invalid(f"{field}.ipam.subnet".lstrip("."), f"{att.subnet!r} is not an IPv4 subnet: {exc}") from None
    if not 8 <= subnet.prefixlen <= 30:
        raise invalid(f"{field}.ipam.subnet".lstrip("."), "the subnet's prefix must be between /8 and /30")
    for name, value in (("gateway", att.gateway), ("rangeStart", att.range_start), ("rangeEnd", att.range_end)):
        if value is None:
            continue
        try:
            inside = IPv4Address(value) in subnet
        except ValueError:
            inside = False
        if not inside:
            raise invalid(f"{field}.ipam.{name}".lstrip("."), f"{value!r} is not an address in {subnet}")
    return att
