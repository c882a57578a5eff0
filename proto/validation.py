"""Semantic checks of a VM spec and of a network, the same for KubeVirt and native input.

Names end up as NATS subject tokens, directory names, netns and interface name parts, libvirt
domain names and shell words: only DNS-1123 labels get through. Errors blame native field paths
(``spec.disks[1].name``); proto.kubevirt.kubevirt_field translates them for KubeVirt manifests.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from proto import fencing, ipam, netcheck
from proto.affinity import check_affinity
from proto.dnsconfig import check_dns
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.machine import check_machine
from proto.nodeapi import Registration
from proto.probes import check_probes
from proto.quantity import InvalidQuantity, format_bytes, parse_bytes
from proto.spec import (
    CloudInitConfigDrive,
    CloudInitNoCloud,
    ContainerDisk,
    EmptyDisk,
    Ephemeral,
    HostDisk,
    Interface,
    NetworkAttachment,
    PersistentVolumeClaim,
    VMSpec,
)
from proto.subjects import is_dns1123_label
from proto.taints import check_tolerations

MIN_MEMORY, MAX_MEMORY = parse_bytes("16Mi"), parse_bytes("256Gi")
MIN_DISK, MAX_DISK = parse_bytes("1Mi"), parse_bytes("2Ti")
MAX_VOLUME = MAX_DISK  # a volume is a sparse qcow2 like an emptyDisk
MAX_VCPUS = 64
MAX_CLOUD_INIT = 64 * 1024
MAX_HOST_PATH = 1024
MAX_GRACE_SECONDS = 3600
MIN_PREFIX, MAX_PREFIX = 8, 30
# Per VM: libvirt targets run vda..vdz (a 27th virtio disk would be "vd{"); 16 disks and 8 NICs are
# more than any seed needs and keep one VM from taking a node's taps, bridges and inodes.
MAX_DISKS = 16
MAX_INTERFACES = 8
MAX_EMPTY_DISK_TOTAL = MAX_DISK

_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]{0,254}$")
DISK_SERIAL = re.compile(r"^[A-Za-z0-9_.+-]{1,256}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")


def invalid(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def check_name(name: str, field: str, what: str = "name") -> None:
    if not is_dns1123_label(name):
        raise invalid(field, f"{what} {name!r} must be a DNS-1123 label: lowercase letters, digits and '-', "
                             "starting and ending with a letter or digit, at most 63 characters")


def validate_image_reference(ref: str, field: str) -> None:
    """registry/path:tag@digest characters only, no ``..``, no leading ``/`` or ``-``, at most 255."""
    if not _IMAGE_REF.fullmatch(ref) or ".." in ref or "//" in ref:
        raise invalid(field, f"{ref!r} is not an image reference (like quay.io/kubevirt/cirros-container-disk-demo:"
                             "latest; lowercase letters, digits and ._-/:@, at most 255 characters)")


def _size(text: str, field: str, low: int, high: int, what: str) -> None:
    try:
        value = parse_bytes(text)
    except InvalidQuantity as exc:
        raise invalid(field, f"{what}: {exc}") from None
    if not low <= value <= high:
        raise invalid(field, f"{what} {text} is impossible here: it must be between {format_bytes(low)} "
                             f"and {format_bytes(high)}")


def _unique_names(names: Iterable[str], field: str, what: str) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        check_name(name, f"{field}[{index}].name", f"{what} name")
        if name in seen:
            raise invalid(f"{field}[{index}].name", f"{what} name {name!r} is used twice")
        seen.add(name)


def check_grace_period(grace: int | None) -> None:
    """A stop's or an eviction's grace (virtctl --grace-period), when one is asked."""
    if grace is not None and not 0 <= grace <= MAX_GRACE_SECONDS:
        raise invalid("gracePeriod", f"grace period {grace}s: it must be between 0 and {MAX_GRACE_SECONDS}")


def validate_vm(spec: VMSpec) -> VMSpec:
    """Return ``spec`` unchanged, or raise ApiError(INVALID) naming the field to blame."""
    check_name(spec.name, "spec.name")
    _size(spec.memory, "spec.memory", MIN_MEMORY, MAX_MEMORY, "memory")
    for part in ("cores", "sockets", "threads"):
        if getattr(spec.cpu, part) < 1:
            raise invalid(f"spec.cpu.{part}", f"cpu {part} must be at least 1")
    vcpus = spec.cpu.cores * spec.cpu.sockets * spec.cpu.threads
    if vcpus > MAX_VCPUS:
        raise invalid("spec.cpu", f"{vcpus} vCPUs (cores x sockets x threads) is more than the {MAX_VCPUS} allowed")
    if not 0 <= spec.termination_grace_period_seconds <= MAX_GRACE_SECONDS:
        raise invalid("spec.terminationGracePeriodSeconds", f"must be between 0 and {MAX_GRACE_SECONDS}")
    check_labels(spec.labels, "spec.labels")
    check_labels(spec.vm_labels, "spec.vmLabels")
    check_labels(spec.node_selector, "spec.nodeSelector")
    for value, field in ((spec.hostname, "spec.hostname"), (spec.subdomain, "spec.subdomain"),
                         (spec.priority_class_name, "spec.priorityClassName")):
        if value is not None:  # a DNS label: in DHCP, cloud-init meta-data and DNS names
            check_name(value, field, field.removeprefix("spec."))
    validate_storage(spec)
    _check_templates(spec)
    _check_network(spec)
    check_machine(spec)
    check_probes(spec)
    check_affinity(spec)
    check_tolerations(spec)
    check_dns(spec.dns_policy, spec.dns_config)
    if spec.high_availability:
        fencing.check_strategy(spec.run_strategy, "spec.runStrategy")
    return spec


def empty_disk_total(spec: VMSpec) -> int:
    """Bytes the VM's emptyDisks may grow to (of a validated spec)."""
    return sum(parse_bytes(v.source.capacity) for v in spec.volumes if isinstance(v.source, EmptyDisk))


def validate_storage(spec: VMSpec) -> None:
    """The spec's disks and volumes, as a manifest's are checked (proto.hotplug checks a volume added so)."""
    if len(spec.disks) > MAX_DISKS:
        raise invalid("spec.disks", f"{len(spec.disks)} disks is more than the {MAX_DISKS} a VM may have")
    if len(spec.volumes) > MAX_DISKS:
        raise invalid("spec.volumes", f"{len(spec.volumes)} volumes is more than the {MAX_DISKS} a VM may have")
    _unique_names((disk.name for disk in spec.disks), "spec.disks", "disk")
    _unique_names((volume.name for volume in spec.volumes), "spec.volumes", "volume")
    volumes, disks = {v.name for v in spec.volumes}, {d.name for d in spec.disks}
    boot_orders: set[int] = set()
    empty_total = 0
    for index, disk in enumerate(spec.disks):
        if disk.name not in volumes:
            raise invalid(f"spec.disks[{index}].name", f"disk {disk.name!r} has no volume of that name")
        if disk.device == "cdrom" and disk.bus == "virtio":
            raise invalid(f"spec.disks[{index}].bus", "a cdrom is on sata or scsi, not virtio")
        if disk.serial is not None and not DISK_SERIAL.match(disk.serial):  # KubeVirt's rule
            raise invalid(f"spec.disks[{index}].serial", "a disk's serial is 1 to 256 of A-Z a-z 0-9 _ . + -")
        if disk.io == "native" and disk.cache != "none":  # QEMU's: native I/O bypasses the host's cache
            raise invalid(f"spec.disks[{index}].io", "io: native needs cache: none")
        if disk.boot_order is not None:
            if disk.boot_order < 1 or disk.boot_order in boot_orders:
                raise invalid(f"spec.disks[{index}].bootOrder", f"boot order {disk.boot_order} must be at least "
                                                                "1 and unique")
            boot_orders.add(disk.boot_order)
    for index, volume in enumerate(spec.volumes):
        field = f"spec.volumes[{index}]"
        if volume.name not in disks:
            raise invalid(f"{field}.name", f"volume {volume.name!r} has no disk of that name")
        match volume.source:
            case ContainerDisk(image=image):
                validate_image_reference(image, f"{field}.source.image")
            case EmptyDisk(capacity=capacity):
                _size(capacity, f"{field}.source.capacity", MIN_DISK, MAX_DISK, "emptyDisk capacity")
                empty_total += parse_bytes(capacity)
                if empty_total > MAX_EMPTY_DISK_TOTAL:
                    raise invalid(f"{field}.source.capacity", "the emptyDisks of a VM add up to more than "
                                                             f"{format_bytes(MAX_EMPTY_DISK_TOTAL)}")
            case PersistentVolumeClaim(claim_name=claim, hotpluggable=hotpluggable):
                check_name(claim, f"{field}.source.claimName", "volume name")
                if hotpluggable:
                    _check_hotpluggable(spec, volume.name, field)
            case CloudInitNoCloud(user_data=user_data, network_data=network_data) | \
                    CloudInitConfigDrive(user_data=user_data, network_data=network_data):
                if not user_data and not network_data:
                    kind = "cloudInitNoCloud" if isinstance(volume.source, CloudInitNoCloud) else "cloudInitConfigDrive"
                    raise invalid(f"{field}.source", f"{kind} needs userData or networkData")
                for key, text in (("userData", user_data), ("networkData", network_data or "")):
                    if len(text.encode()) > MAX_CLOUD_INIT:
                        raise invalid(f"{field}.source.{key}", f"cloud-init {key} is over {MAX_CLOUD_INIT // 1024} KiB")
            case Ephemeral(claim_name=claim):
                check_name(claim, f"{field}.source.persistentVolumeClaim.claimName", "volume name")
            case HostDisk():
                check_host_disk(volume.source, f"{field}.source")


def _check_hotpluggable(spec: VMSpec, name: str, field: str) -> None:
    """A hotpluggable volume is attached and removed while the guest runs: on a scsi disk (virtio-scsi's
    events; a virtio disk would need a PCIe slot with hotplug), and never with hotplug disabled."""
    if spec.disable_hotplug:
        raise invalid(f"{field}.source.hotpluggable", "a hotpluggable volume needs hotplug: the VM has "
                                                       "domain.devices.disableHotplug")
    index, disk = next((i, d) for i, d in enumerate(spec.disks) if d.name == name)
    if disk.device != "disk" or disk.bus != "scsi":
        raise invalid(f"spec.disks[{index}].bus", f"disk {name!r} of a hotpluggable volume must be a disk on the "
                                                   "scsi bus")


def check_host_disk(disk: HostDisk, field: str) -> None:
    """The API's part: an absolute, normalised path (no ``..``, no ``//``, no trailing ``/``) of printable
    characters, and a capacity exactly when one is made. Whether the path is under a directory the
    node's operator allowed, symlinks resolved, only that node can tell (launcher.hostdisks)."""
    path = disk.path
    if (not path.startswith("/") or posixpath.normpath(path) != path or path.startswith("//") or path == "/"
            or len(path) > MAX_HOST_PATH or not path.isprintable()):
        raise invalid(f"{field}.path", f"hostDisk path {path[:MAX_HOST_PATH]!r} must be an absolute, normalised path "
                                       f"of a file (no '..', '.', '//' or trailing '/'), at most {MAX_HOST_PATH} "
                                       "printable characters")
    if disk.kind == "DiskOrCreate":
        if disk.capacity is None:
            raise invalid(f"{field}.capacity", "a hostDisk of type DiskOrCreate needs a capacity")
        _size(disk.capacity, f"{field}.capacity", MIN_DISK, MAX_DISK, "hostDisk capacity")
    elif disk.capacity is not None:
        raise invalid(f"{field}.capacity", "a hostDisk of type Disk is the file as it is: capacity is only for "
                                           "DiskOrCreate")


def _check_templates(spec: VMSpec) -> None:
    _unique_names((t.name for t in spec.data_volume_templates), "spec.dataVolumeTemplates", "dataVolumeTemplate")
    if len(spec.data_volume_templates) > MAX_DISKS:
        raise invalid("spec.dataVolumeTemplates", f"more than the {MAX_DISKS} volumes a VM may have")
    for index, template in enumerate(spec.data_volume_templates):
        field = f"spec.dataVolumeTemplates[{index}]"
        check_name(template.name, f"{field}.metadata.name", "volume name")
        _size(template.size, f"{field}.spec.storage.resources.requests.storage", MIN_DISK, MAX_VOLUME, "volume size")
        if template.image is not None:
            validate_image_reference(template.image, f"{field}.spec.source.registry.url")


def validate_volume_fields(name: str, size: str, image: str | None, node: str | None) -> None:
    """A volume as asked for (``virtbus volume create``, or stored)."""
    check_name(name, "name", "volume name")
    _size(size, "size", MIN_DISK, MAX_VOLUME, "volume size")
    if image is not None:
        validate_image_reference(image, "image")
    if node is not None:
        check_name(node, "node", "node name")


def _check_network(spec: VMSpec) -> None:
    for what, items in (("interfaces", spec.interfaces), ("networks", spec.networks)):
        if len(items) > MAX_INTERFACES:
            raise invalid(f"spec.{what}", f"{len(items)} {what} is more than the {MAX_INTERFACES} a VM may have")
    _unique_names((iface.name for iface in spec.interfaces), "spec.interfaces", "interface")
    _unique_names((network.name for network in spec.networks), "spec.networks", "network")
    networks, interfaces = {n.name: n for n in spec.networks}, {i.name for i in spec.interfaces}
    pod_networks = 0
    for index, network in enumerate(spec.networks):
        field = f"spec.networks[{index}]"
        if network.name not in interfaces:
            raise invalid(f"{field}.name", f"network {network.name!r} has no interface of that name")
        if network.kind == "pod":
            pod_networks += 1
            if pod_networks > 1:
                raise invalid(f"{field}.kind", "a VM has at most one pod network")
            if network.network_name is not None:
                raise invalid(f"{field}.networkName", "a pod network has no networkName")
        else:
            check_name(network.network_name or "", f"{field}.networkName", "multus networkName")
    macs: set[str] = set()
    for index, iface in enumerate(spec.interfaces):
        field = f"spec.interfaces[{index}]"
        net = networks.get(iface.name)
        if net is None:
            raise invalid(f"{field}.name", f"interface {iface.name!r} has no network of that name")
        if net.kind == "multus" and iface.binding != "bridge":
            raise invalid(f"{field}.binding", "an interface on a multus network must use the bridge binding")
        if iface.mac_address is not None:
            mac = iface.mac_address.lower()
            if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
                raise invalid(f"{field}.macAddress", f"{iface.mac_address!r} is not a unicast MAC address "
                                                     "(xx:xx:xx:xx:xx:xx, first octet even)")
            if mac in macs:
                raise invalid(f"{field}.macAddress", f"MAC address {iface.mac_address} is used twice")
            macs.add(mac)
        _check_ports(iface, field)


def _check_ports(iface: Interface, field: str) -> None:
    seen: set[tuple[str, int]] = set()
    names: set[str] = set()
    for index, port in enumerate(iface.ports):
        where = f"{field}.ports[{index}]"
        if not 1 <= port.port <= 65535:
            raise invalid(f"{where}.port", f"port {port.port} is not between 1 and 65535")
        if (port.protocol, port.port) in seen:
            raise invalid(f"{where}.port", f"{port.protocol} port {port.port} is listed twice")
        seen.add((port.protocol, port.port))
        if port.name is not None:
            if not _PORT_NAME.fullmatch(port.name) or port.name in names:
                raise invalid(f"{where}.name", f"port name {port.name!r} must be unique and 1-15 of a-z0-9-")
            names.add(port.name)


def validate_network(att: NetworkAttachment) -> NetworkAttachment:
    """Return ``att`` unchanged, or raise ApiError(INVALID) naming the native field to blame."""
    check_name(att.name, "spec.name")
    netcheck.ifname(att.bridge, "spec.bridge")
    if att.bridge == netcheck.POD_BRIDGE:
        raise invalid("spec.bridge", f"{att.bridge!r} is the pod network's bridge; a secondary network needs its own")
    if att.vlan is not None:
        netcheck.vlan_id(att.vlan, "spec.vlan")
    if att.subnet is None:  # layer 2: the segment's own DHCP server hands out the addresses
        for key, value in (("gateway", att.gateway), ("rangeStart", att.range_start), ("rangeEnd", att.range_end)):
            if value is not None:
                raise invalid(f"spec.{key}", f"{key} needs a subnet (a network without one is layer 2)")
        return att
    try:
        subnet = IPv4Network(att.subnet)
    except ValueError as exc:
        raise invalid("spec.subnet", f"{att.subnet!r} is not an IPv4 network: {exc}") from None
    if not MIN_PREFIX <= subnet.prefixlen <= MAX_PREFIX:
        raise invalid("spec.subnet", f"the prefix of {subnet} must be between /{MIN_PREFIX} and /{MAX_PREFIX}")
    reserved = netcheck.reserved_overlap(subnet)
    if reserved is not None:
        raise invalid("spec.subnet", f"{subnet} overlaps {reserved}, which no secondary network may route")
    addresses: dict[str, IPv4Address] = {}
    for key, value in (("gateway", att.gateway), ("rangeStart", att.range_start), ("rangeEnd", att.range_end)):
        if value is None:
            continue
        try:
            address = IPv4Address(value)
        except ValueError:
            raise invalid(f"spec.{key}", f"{key} {value!r} is not an IPv4 address") from None
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            raise invalid(f"spec.{key}", f"{key} {value} is not a host address in {subnet}")
        addresses[key] = address
    if "rangeStart" in addresses and "rangeEnd" in addresses and addresses["rangeStart"] > addresses["rangeEnd"]:
        raise invalid("spec.rangeEnd", f"rangeEnd {att.range_end} comes before rangeStart {att.range_start}")
    return att


MAX_NODE_CPUS = 4096


def validate_node_registration(reg: Registration) -> Registration:
    """What a node says of itself: sane sizes, label syntax, and an address that is a host address
    outside the pod network (it becomes a route's gateway on every other node)."""
    if not 1 <= reg.cpus <= MAX_NODE_CPUS:
        raise invalid("cpus", f"{reg.cpus} CPUs is impossible (1 to {MAX_NODE_CPUS})")
    if not 0 < reg.memory <= 2**50:
        raise invalid("memory", f"{reg.memory} bytes of memory is impossible")
    check_labels(reg.labels, "labels")
    for i, bridge in enumerate(reg.allowed_bridges):
        netcheck.ifname(bridge, f"allowedBridges[{i}]")
        if bridge == netcheck.POD_BRIDGE:
            raise invalid(f"allowedBridges[{i}]", f"{bridge} is the pod network's bridge")
    for i, bridge in enumerate(reg.ovs_bridges):
        netcheck.ifname(bridge, f"ovsBridges[{i}]")
    if reg.free_disk is not None and reg.free_disk < 0:
        raise invalid("freeDisk", "free disk cannot be negative")
    if reg.address is not None:
        try:
            address = IPv4Address(reg.address)
        except ValueError:
            raise invalid("address", f"{reg.address!r} is not an IPv4 address") from None
        if (address.is_loopback or address.is_multicast or address.is_unspecified or address.is_link_local
                or address in ipam.CLUSTER_CIDR or address == IPv4Address("255.255.255.255")):
            raise invalid("address", f"{address} cannot be a node's address")
    return reg
