"""Services and Endpoints in the CLI: ``apply -f`` of v1 manifests, ``get services|endpoints`` as
kubectl prints them, ``expose vm|vmi NAME --name SVC`` as virtctl's, ``delete service NAME``."""

from __future__ import annotations

import argparse
from typing import Any

from ctl import kindnames, render
from ctl.client import ApiClient
from ctl.stdout import say
from proto import resources
from proto.api import (
    Ack,
    EndpointsList,
    EndpointsReply,
    NameRequest,
    ServiceExpose,
    ServiceList,
    ServiceReply,
    ServiceView,
)
from proto.schema import NAMESPACE
from proto.state import Endpoints, Service, ServiceType

KINDS = kindnames.SERVICES
MANIFEST_KINDS = {"Service": "service", "Endpoints": "endpoints"}


async def apply(api: ApiClient, kind: str, body: bytes) -> None:
    if MANIFEST_KINDS[kind] == "service":
        view = (await api.call("service", "apply", body, ServiceReply)).item
        say(f"service/{view.service.name} applied ({view.service.type}, {_cluster_ip(view.service)})")
    else:
        ends = (await api.call("endpoints", "apply", body, EndpointsReply)).item
        say(f"endpoints/{ends.name} applied ({_addresses(ends) or 'no addresses'})")


async def get(api: ApiClient, kind: str, name: str | None, output: str | None) -> None:
    structured = render.is_structured(output)
    if kind == "service":
        if name:
            views = [(await api.call("service", "get", NameRequest(name=name), ServiceReply)).item]
        else:
            views = (await api.call("service", "list", {}, ServiceList)).items
        if structured:
            assert output is not None
            say(render.objects([service_object(v) for v in views], output, one=bool(name)))
            return
        rows = [[v.service.name, str(v.service.type), _cluster_ip(v.service), _external(v.service),
                 _ports(v.service), render.age(v.service.created_at)] for v in views]
        headers = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
        if output == "wide":
            headers.append("SELECTOR")
            for row, v in zip(rows, views, strict=True):
                row.append(",".join(f"{k}={val}" for k, val in v.service.selector.items()) or "<none>")
        say(render.table(headers, rows))
        return
    if name:
        items = [(await api.call("endpoints", "get", NameRequest(name=name), EndpointsReply)).item]
    else:
        items = (await api.call("endpoints", "list", {}, EndpointsList)).items
    if structured:
        assert output is not None
        say(render.objects([endpoints_object(e) for e in items], output, one=bool(name)))
        return
    say(render.table(["NAME", "ENDPOINTS"], [[e.name, _endpoints(e)] for e in items]))


async def expose(api: ApiClient, args: argparse.Namespace) -> None:
    request = ServiceExpose(kind=args.kind, name=args.name, service_name=args.service_name, port=args.port,
                            target_port=args.target_port, protocol=args.protocol, type=args.type,
                            port_name=args.port_name or "", cluster_ip=args.cluster_ip or "",
                            external_ip=args.external_ip or "", load_balancer_ip=args.load_balancer_ip or "",
                            ip_family=args.ip_family or "", ip_family_policy=args.ip_family_policy or "")
    view = (await api.call("vm", "expose-service", request, ServiceReply)).item
    say(f"service/{view.service.name} exposed ({view.service.type} {_cluster_ip(view.service)}, "
        f"{_ports(view.service)})")


async def delete(api: ApiClient, kind: str, name: str) -> None:
    say((await api.call(kind, "delete", NameRequest(name=name), Ack)).message)


def add_expose_flags(e: Any) -> None:
    """virtctl expose's flags; with --name the VM is exposed as a Service, without it on a node port
    of its own node (virtbus's own expose)."""
    e.add_argument("--name", dest="service_name", default=None, help="the Service to create (virtctl expose)")
    e.add_argument("--target-port", type=int, default=None, help="the VM's port; default: --port")
    e.add_argument("--type", default="ClusterIP", choices=[t.value for t in ServiceType])
    e.add_argument("--port-name", default=None)
    e.add_argument("--cluster-ip", default=None, help="the virtual IP; None: headless")
    e.add_argument("--external-ip", default=None, help="an address of the nodes' networks the Service answers on too")
    e.add_argument("--load-balancer-ip", default=None, help="with --type LoadBalancer: the floating IP to take")
    e.add_argument("--ip-family", default=None, help="IPv4 (the only one virtbus has)")
    e.add_argument("--ip-family-policy", default=None, help="SingleStack (the only one virtbus has)")


def service_object(view: ServiceView) -> resources.Obj:
    s = view.service
    ports = [{k: v for k, v in (("name", p.name or None), ("protocol", p.protocol), ("port", p.port),
                                ("targetPort", p.target_port), ("nodePort", p.node_port)) if v is not None}
             for p in s.ports]
    spec: dict[str, Any] = {"type": str(s.type), "clusterIP": s.cluster_ip, "clusterIPs": [s.cluster_ip],
                            "ports": ports}
    if s.selector:
        spec["selector"] = s.selector
    if s.external_ips:
        spec["externalIPs"] = list(s.external_ips)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": s.name, "namespace": NAMESPACE, "uid": s.uid,
                         "creationTimestamp": resources.timestamp(s.created_at), **({"labels": s.labels}
                                                                                    if s.labels else {})},
            "spec": spec, "status": {"loadBalancer": {"ingress": [{"ip": s.load_balancer_ip}]}
                                     if s.load_balancer_ip else {}}}


def endpoints_object(e: Endpoints) -> resources.Obj:
    subsets = []
    for subset in e.subsets:
        addresses = [{k: v for k, v in (("ip", a.ip), ("hostname", a.hostname), ("nodeName", a.node)) if v}
                     | ({"targetRef": {"kind": "VirtualMachineInstance", "name": a.vmi, "namespace": NAMESPACE}}
                        if a.vmi else {}) for a in subset.addresses]
        ports = [{k: v for k, v in (("name", p.name or None), ("port", p.port), ("protocol", p.protocol)) if v}
                 for p in subset.ports]
        subsets.append({"addresses": addresses, "ports": ports})
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": e.name, "namespace": NAMESPACE},
            "subsets": subsets}


def _cluster_ip(s: Service) -> str:
    return s.cluster_ip


def _external(s: Service) -> str:
    shown = ([s.load_balancer_ip or "<pending>"] if s.type is ServiceType.LOAD_BALANCER else []) + s.external_ips
    return ",".join(shown) or "<none>"


def _ports(s: Service) -> str:
    return ",".join(f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in s.ports) \
        or "<none>"


def _addresses(e: Endpoints) -> str:
    return ",".join(a.ip for s in e.subsets for a in s.addresses)


def _endpoints(e: Endpoints) -> str:
    out = [f"{a.ip}:{p.port}" for s in e.subsets for a in s.addresses for p in s.ports]
    out += [a.ip for s in e.subsets if not s.ports for a in s.addresses]
    return ",".join(out[:3]) + (f" + {len(out) - 3} more..." if len(out) > 3 else "") if out else "<none>"
