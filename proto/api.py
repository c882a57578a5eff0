"""Requests and replies of the api service (``virtbus.api.<kind>.<verb>``).

Every reply is JSON: the result struct, or ``{"error": {...}}`` (proto.errors.ErrorReply).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from proto.errors import ApiError, Code, ErrorReply
from proto.instancetypes import Instancetype
from proto.spec import NetworkAttachment, Taint, TaintEffect
from proto.state import VM, VMI, Endpoints, Exposure, FloatingIP, Node, PersistentVolume, Service

# virtbus's version (pyproject.toml's): the api service says it ($SRV.INFO), `virtbus version` prints both
VERSION = "0.1.0"


class Message(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    pass


class NameRequest(Message, frozen=True):
    name: str


class StartRequest(Message, frozen=True):
    """``start NAME [--paused]``: virtctl's start, its instance paused before its guest first runs."""

    name: str
    paused: bool = False


class PowerRequest(Message, frozen=True):
    """``stop``/``restart`` NAME, with virtctl's ``--force --grace-period N``: the guest gets N seconds
    (0: none) to power off instead of its spec's terminationGracePeriodSeconds, when that is shorter."""

    name: str
    grace_period: int | None = None


class EvictRequest(Message, frozen=True):
    """Evict an instance from its node (virtbus drain): it is stopped as ``stop`` stops it, its guest
    given ``grace_period`` seconds when that is shorter than its own; what owns it starts it again
    where it may."""

    name: str
    grace_period: int | None = None
    # evict also an instance whose evictionStrategy (LiveMigrate, External) refuses it: kubectl drain's
    # --disable-eviction, which deletes pods past what guards them
    ignore_eviction_strategy: bool = False


class LabelRequest(Message, frozen=True):
    """``label node NAME key=value key-`` (kubectl label): labels to set and keys to remove; a value
    that differs from the one there only with ``overwrite``."""

    name: str
    labels: dict[str, str] = {}
    remove: list[str] = []
    overwrite: bool = False


class TaintKey(Message, frozen=True):
    key: str
    effect: TaintEffect | None = None  # None: the key's taints of every effect


class TaintRequest(Message, frozen=True):
    """``taint node NAME key=value:Effect key:Effect-`` (kubectl taint): taints to add and to remove;
    another value for a key and effect there only with ``overwrite``."""

    name: str
    add: list[Taint] = []
    remove: list[TaintKey] = []
    overwrite: bool = False


class ListRequest(Message, frozen=True):
    pass


class SelectRequest(Message, frozen=True):
    """A list of VMs or VMIs, those whose labels the selector picks (kubectl's `-l`, as text: app=web,tier!=db)."""

    label_selector: str = ""


class VMView(Message, frozen=True):
    """A VM with the status KubeVirt prints (``printableStatus``) derived from its instance."""

    vm: VM
    revision: int
    printable_status: str
    vmi: VMI | None = None


class VMReply(Message, frozen=True):
    item: VMView


class VMList(Message, frozen=True):
    items: list[VMView]


class VMIReply(Message, frozen=True):
    item: VMI


class VMIList(Message, frozen=True):
    items: list[VMI]


class NodeView(Message, frozen=True):
    node: Node
    ready: bool
    allocated_memory: int
    allocated_cpus: int
    vmis: int
    vcpu_capacity: int = 0  # the vCPUs it may hold: its CPUs times the cpuAllocationRatio (0: not said)


class NodeList(Message, frozen=True):
    items: list[NodeView]


class NetworkReply(Message, frozen=True):
    item: NetworkAttachment


class NetworkList(Message, frozen=True):
    items: list[NetworkAttachment]


class ImageInfo(Message, frozen=True):
    """An image of the store. format and virtualSize are what its uploader recorded (None: not
    recorded, as after a bare ``nats object put``); sha256 is its content's, from the store's digest."""

    name: str
    size: int
    digest: str | None = None
    modified: str | None = None
    format: str | None = None
    virtual_size: int | None = None
    sha256: str | None = None


class ImageList(Message, frozen=True):
    items: list[ImageInfo]


class ExposeRequest(Message, frozen=True):
    name: str
    port: int
    node_port: int | None = None
    protocol: str = "TCP"


class UnexposeRequest(Message, frozen=True):
    name: str
    port: int
    protocol: str = "TCP"


class ExposureList(Message, frozen=True):
    items: list[Exposure]


class FloatingIPRequest(Message, frozen=True):
    address: str
    network: str | None = None  # for create
    vm: str | None = None  # for attach


class FloatingIPList(Message, frozen=True):
    items: list[FloatingIP]


class VolumeCreate(Message, frozen=True):
    """``virtbus volume create NAME --size 2Gi [--from-image IMAGE] [--node N]``."""

    name: str
    size: str
    image: str | None = None
    node: str | None = None


class VolumeResize(Message, frozen=True):
    name: str
    size: str


class VolumeReply(Message, frozen=True):
    item: PersistentVolume
    message: str = ""  # what a change means for the guests using it (a resize)


class VolumeList(Message, frozen=True):
    items: list[PersistentVolume]


class InstancetypeReply(Message, frozen=True):
    item: Instancetype


class InstancetypeList(Message, frozen=True):
    items: list[Instancetype]


class ServiceExpose(Message, frozen=True):
    """``virtbus expose vm|vmi NAME --name SVC --port P [--target-port T] [--type T]`` (virtctl expose)."""

    kind: str  # vm | vmi
    name: str
    service_name: str
    port: int
    target_port: int | None = None
    protocol: str = "TCP"
    type: str = "ClusterIP"
    port_name: str = ""
    cluster_ip: str = ""
    external_ip: str = ""
    load_balancer_ip: str = ""
    ip_family: str = ""
    ip_family_policy: str = ""


class ServiceView(Message, frozen=True):
    """A Service with its Endpoints as they stand (None: none yet)."""

    service: Service
    endpoints: Endpoints | None = None


class ServiceReply(Message, frozen=True):
    item: ServiceView


class ServiceList(Message, frozen=True):
    items: list[ServiceView]


class EndpointsReply(Message, frozen=True):
    item: Endpoints


class EndpointsList(Message, frozen=True):
    items: list[Endpoints]


class Ack(Message, frozen=True):
    message: str


_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(ErrorReply)

T = TypeVar("T")


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def decode_request(data: bytes, kind: type[T]) -> T:
    """Decode a request body; empty bodies count as ``{}``. Raises ApiError(BAD_REQUEST)."""
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(Code.BAD_REQUEST, str(exc), field=_path_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise ApiError(Code.BAD_REQUEST, f"malformed JSON: {exc}") from None


def decode_reply(data: bytes, kind: type[T]) -> T:
    """Decode a reply, raising the ApiError it carries instead of a result."""
    if data.startswith(b'{"error"'):
        raise ApiError.from_body(_error_decoder.decode(data).error)
    return msgspec.json.decode(data, type=kind)


def _path_of(message: str) -> str | None:
    # msgspec reports "... - at `$.spec.memory`"
    marker = "at `$"
    if marker not in message:
        return None
    path = message.split(marker, 1)[1].rstrip("`")
    return path.lstrip(".") or None
