"""Kubernetes Services and Endpoints (``v1``), as virtbus keeps them: what they are, how a manifest
becomes one (refused by field path where virtbus cannot honour it), which VMIs a selector picks,
and the endpoints that follow from them. Pure: values in, values out.

virtbus has one namespace, ``default``: a Service is ``<name>.default.svc.cluster.local``.
A Service's virtual IP comes from SERVICE_CIDR (kube-apiserver's --service-cluster-ip-range).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from proto import netcheck
from proto.dnsconfig import CLUSTER_DNS_IP, CLUSTER_DOMAIN
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.schema import NAMESPACE, check_namespace, only_known
from proto.state import (
    HEADLESS,
    VMI,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Phase,
    Service,
    ServicePort,
    ServiceType,
    is_ready,
)
from proto.validation import check_name

SERVICE_CIDR = IPv4Network("10.96.0.0/16")
# What KubeVirt puts on every VMI of a VM (virt-controller): a selector virtctl expose falls back on.
VM_NAME_LABEL = "vm.kubevirt.io/name"
MAX_PORTS = 64
MAX_ADDRESSES = 1024
# An IANA service name, as Kubernetes takes a port's name: 1-15 of a-z0-9-, a letter in it, no '--'.
_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


def _bad(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def _map(obj: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ApiError(Code.BAD_REQUEST, f"{field} must be an object", field)
    return obj


def _metadata(obj: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    meta = _map(obj.get("metadata"), "metadata")
    only_known(meta, "metadata", ("name", "namespace", "labels"),
          ("annotations", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"))
    name = meta.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.BAD_REQUEST, "metadata.name is required", "metadata.name")
    check_name(name, "metadata.name", "Service name")
    check_namespace(meta)
    labels = dict(_map(meta.get("labels") or {}, "metadata.labels"))
    check_labels(labels, "metadata.labels")
    return name, labels


def _api_kind(raw: Any, kind: str) -> Mapping[str, Any]:
    obj = _map(raw, "")
    if obj.get("apiVersion") != "v1" or obj.get("kind") != kind:
        raise ApiError(Code.BAD_REQUEST, f"a v1 {kind} manifest is expected", "kind")
    only_known(obj, "", ("apiVersion", "kind", "metadata", "spec" if kind == "Service" else "subsets"), ("status",))
    return obj


def parse_service(obj: Any, *, uid: str, now: float) -> Service:
    """A ``v1`` Service manifest. cluster_ip is what the manifest asks for ("" for any free address)."""
    obj = _api_kind(obj, "Service")
    name, labels = _metadata(obj)
    spec = _map(obj.get("spec") or {}, "spec")
    only_known(spec, "spec", ("type", "selector", "ports", "clusterIP", "clusterIPs", "sessionAffinity",
                         "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy", "externalTrafficPolicy",
                         "publishNotReadyAddresses", "loadBalancerIP", "allocateLoadBalancerNodePorts",
                         "externalIPs"))
    try:
        kind = ServiceType(spec.get("type", "ClusterIP"))
    except ValueError:
        raise _bad("spec.type", f"spec.type {spec.get('type')!r} is not supported (ClusterIP, NodePort or "
                                "LoadBalancer)") from None
    for key, allowed in (("sessionAffinity", ("None",)), ("ipFamilies", (["IPv4"],)),
                         ("ipFamilyPolicy", ("SingleStack",)), ("internalTrafficPolicy", ("Cluster",)),
                         ("externalTrafficPolicy", ("Cluster",)), ("publishNotReadyAddresses", (False,)),
                         ("allocateLoadBalancerNodePorts", (True,))):
        if key in spec and spec[key] not in allowed:
            raise _bad(f"spec.{key}", f"spec.{key} {spec[key]!r} is not supported (only {allowed[0]!r})")
    selector = dict(_map(spec.get("selector") or {}, "spec.selector"))
    check_labels(selector, "spec.selector")
    cluster_ip = _cluster_ip(spec, kind)
    ports_in = spec.get("ports") or []
    if not isinstance(ports_in, list) or len(ports_in) > MAX_PORTS:
        raise _bad("spec.ports", f"spec.ports must be a list of at most {MAX_PORTS} ports")
    if not ports_in and cluster_ip != HEADLESS:
        raise _bad("spec.ports", "a Service with a cluster IP needs at least one port")
    ports = [_port(p, f"spec.ports[{i}]", kind, several=len(ports_in) > 1) for i, p in enumerate(ports_in)]
    _unique([(p.port, p.protocol) for p in ports], "spec.ports", "port")
    _unique([p.name for p in ports], "spec.ports", "name")
    lb_ip = spec.get("loadBalancerIP")
    if lb_ip is not None:
        if kind is not ServiceType.LOAD_BALANCER:
            raise _bad("spec.loadBalancerIP", "only a LoadBalancer Service has a loadBalancerIP")
        lb_ip = str(netcheck.host_address(lb_ip, "spec.loadBalancerIP"))
    external = spec.get("externalIPs") or []
    if not isinstance(external, list) or len(external) > MAX_PORTS:
        raise _bad("spec.externalIPs", f"spec.externalIPs must be a list of at most {MAX_PORTS} addresses")
    external_ips = [str(netcheck.host_address(ip, f"spec.externalIPs[{i}]")) for i, ip in enumerate(external)]
    return Service(name=name, uid=uid, type=kind, ports=ports, created_at=now, selector=selector,
                   cluster_ip=cluster_ip, labels=labels, load_balancer_ip=lb_ip, external_ips=external_ips)


def _cluster_ip(spec: Mapping[str, Any], kind: ServiceType) -> str:
    ip = spec.get("clusterIP", "")
    ips = spec.get("clusterIPs")
    if ips is not None and (not isinstance(ips, list) or ips[:1] != [ip] or len(ips) > 1):
        raise _bad("spec.clusterIPs", "spec.clusterIPs may only repeat spec.clusterIP (one IPv4 family)")
    if ip in ("", HEADLESS):
        if ip == HEADLESS and kind is not ServiceType.CLUSTER_IP:
            raise _bad("spec.clusterIP", f"a {kind} Service cannot be headless (clusterIP: None)")
        return str(ip)
    if not isinstance(ip, str):
        raise _bad("spec.clusterIP", "spec.clusterIP must be an IPv4 address, None or empty")
    return str(cluster_ip_in_range(ip, "spec.clusterIP"))


def cluster_ip_in_range(ip: str, field: str) -> IPv4Address:
    address = netcheck.ipv4(ip, field)
    if address not in SERVICE_CIDR or address in (SERVICE_CIDR.network_address, SERVICE_CIDR.broadcast_address):
        raise _bad(field, f"{ip} is not in the service range {SERVICE_CIDR}")
    return address


def _port(obj: Any, field: str, kind: ServiceType, *, several: bool) -> ServicePort:
    p = _map(obj, field)
    only_known(p, field, ("name", "protocol", "port", "targetPort", "nodePort"), ("appProtocol",))
    name = p.get("name", "")
    if not isinstance(name, str) or (name and not _PORT_NAME.fullmatch(name)):
        raise _bad(f"{field}.name", f"{field}.name must be an IANA service name (1-15 of a-z0-9-)")
    if several and not name:
        raise _bad(f"{field}.name", "every port of a Service with several ports needs a name")
    protocol = netcheck.protocol(p.get("protocol", "TCP"), f"{field}.protocol")
    port = netcheck.port(p.get("port"), f"{field}.port")
    target = p.get("targetPort", port)
    if isinstance(target, str):
        raise _bad(f"{field}.targetPort", "a named targetPort is not supported: VMs declare no named ports; "
                                           "give the number")
    target = netcheck.port(target, f"{field}.targetPort")
    node_port = p.get("nodePort")
    if node_port is not None:
        if kind is ServiceType.CLUSTER_IP:
            raise _bad(f"{field}.nodePort", "only NodePort and LoadBalancer Services have node ports")
        node_port = netcheck.node_port(node_port, f"{field}.nodePort")
    return ServicePort(port=port, target_port=target, protocol=protocol, name=name, node_port=node_port)


def _unique(values: list[Any], field: str, what: str) -> None:
    seen = set()
    for i, v in enumerate(values):
        if v in seen and v != "":
            raise _bad(f"{field}[{i}]", f"the {what} {v!r} appears twice")
        seen.add(v)


def parse_endpoints(obj: Any) -> Endpoints:
    """A hand-written ``v1`` Endpoints manifest (for a Service without a selector)."""
    obj = _api_kind(obj, "Endpoints")
    name, _ = _metadata(obj)
    subsets_in = obj.get("subsets") or []
    if not isinstance(subsets_in, list):
        raise _bad("subsets", "subsets must be a list")
    subsets = []
    total = 0
    for i, raw in enumerate(subsets_in):
        field = f"subsets[{i}]"
        s = _map(raw, field)
        only_known(s, field, ("addresses", "ports", "notReadyAddresses"))
        if s.get("notReadyAddresses"):
            raise _bad(f"{field}.notReadyAddresses", "notReadyAddresses are not supported: list ready ones only")
        addresses = []
        for j, a in enumerate(s.get("addresses") or []):
            af = f"{field}.addresses[{j}]"
            a = _map(a, af)
            only_known(a, af, ("ip", "hostname"), ("targetRef", "nodeName"))
            ip = str(netcheck.host_address(a.get("ip"), f"{af}.ip"))
            hostname = a.get("hostname")
            if hostname is not None:
                check_name(hostname, f"{af}.hostname", "hostname")
            addresses.append(EndpointAddress(ip=ip, hostname=hostname))
        ports = []
        for j, p in enumerate(s.get("ports") or []):
            pf = f"{field}.ports[{j}]"
            p = _map(p, pf)
            only_known(p, pf, ("name", "port", "protocol"), ("appProtocol",))
            name_ = p.get("name", "")
            if not isinstance(name_, str) or (name_ and not _PORT_NAME.fullmatch(name_)):
                raise _bad(f"{pf}.name", f"{pf}.name must be a port name")
            ports.append(EndpointPort(port=netcheck.port(p.get("port"), f"{pf}.port"),
                                      protocol=netcheck.protocol(p.get("protocol", "TCP"), f"{pf}.protocol"),
                                      name=name_))
        total += len(addresses)
        subsets.append(EndpointSubset(addresses=addresses, ports=ports))
    if total > MAX_ADDRESSES:
        raise _bad("subsets", f"at most {MAX_ADDRESSES} addresses")
    return Endpoints(name=name, subsets=subsets, manual=True)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service's selector picks the objects that carry every one of its labels; an empty one picks
    nothing (its Endpoints are written by hand)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(vmi: VMI) -> dict[str, str]:
    """The labels a Service selects a VMI by: in KubeVirt a Service selects the VMI's virt-launcher
    pod, which carries the template's labels and the name of the VM it runs. Not the VMI's own labels
    (proto.resources.vmi_labels: the template's and kubevirt.io/nodeName), which `get vmis -l` selects."""
    labels = dict(vmi.spec.labels)
    if not vmi.standalone:
        labels.setdefault(VM_NAME_LABEL, vmi.name)
    return labels


def ready_address(vmi: VMI, service: str | None = None) -> EndpointAddress | None:
    """A Running VMI with a pod address serves (with a readinessProbe, once it is Ready); a paused,
    stopping or finished one does not. In the Service whose name is its subdomain it is known by its
    host name (Kubernetes' pod hostname)."""
    if vmi.phase is not Phase.RUNNING or vmi.stop_requested or vmi.deleting or vmi.pause_requested:
        return None
    if not vmi.interfaces or not vmi.interfaces[0].ip_address:
        return None
    if not is_ready(vmi):
        return None  # its readinessProbe has not passed (or no longer does)
    hostname = vmi.spec.guest_hostname if service is not None and vmi.spec.subdomain == service else None
    return EndpointAddress(ip=vmi.interfaces[0].ip_address, vmi=vmi.name, node=vmi.node_name, hostname=hostname)


def endpoints_for(service: Service, vmis: Iterable[VMI]) -> Endpoints:
    """The Endpoints of a Service with a selector: one subset, its ready VMIs' pod addresses (sorted,
    so an unchanged set is an unchanged value) on its target ports."""
    addresses = sorted((a for v in vmis if selects(service.selector, pod_labels(v))
                        for a in [ready_address(v, service.name)] if a is not None),
                       key=lambda a: (a.ip, a.vmi or ""))
    if not addresses:
        return Endpoints(name=service.name)
    ports = [EndpointPort(port=p.target_port, protocol=p.protocol, name=p.name) for p in service.ports]
    return Endpoints(name=service.name, subsets=[EndpointSubset(addresses=addresses, ports=ports)])


def free_cluster_ip(taken: set[str], wanted: str = "") -> IPv4Address | None:
    """The address a new Service gets: the one it asked for if free, else the lowest free one
    (skipping .1, which Kubernetes gives its own API service and people expect taken, and the
    cluster DNS address, which no Service may hold)."""
    reserved = {str(CLUSTER_DNS_IP)}
    if wanted:
        return None if wanted in taken or wanted in reserved else IPv4Address(wanted)
    for address in SERVICE_CIDR.hosts():
        if int(address) - int(SERVICE_CIDR.network_address) > 1 and str(address) not in taken | reserved:
            return address
    return None


def dns_name(service: str) -> str:
    return f"{service}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"
