"""Routes and Ingresses in the CLI: ``apply -f`` of their manifests, ``get routes|ingresses`` as
``oc get routes`` and ``kubectl get ingress`` print them (``-o json|yaml``: the objects, which apply
back as they are), ``delete route|ingress NAME``."""

from __future__ import annotations

from typing import Any

from ctl import kindnames, render
from ctl.client import ApiClient
from ctl.stdout import say
from proto import resources
from proto.api import Ack, NameRequest
from proto.routes import (
    INGRESS_API,
    ROUTE_API,
    Backend,
    Ingress,
    IngressList,
    IngressReply,
    Route,
    RouteList,
    RouteReply,
    unadmitted_routes,
)
from proto.schema import NAMESPACE

KINDS = kindnames.ROUTES
MANIFEST_KINDS = {"Route": "route", "Ingress": "ingress"}


async def apply(api: ApiClient, kind: str, body: bytes) -> None:
    if MANIFEST_KINDS[kind] == "route":
        route = (await api.call("route", "apply", body, RouteReply)).item
        say(f"route/{route.name} applied ({route.host}{route.path})")
    else:
        ingress = (await api.call("ingress", "apply", body, IngressReply)).item
        say(f"ingress/{ingress.name} applied ({_hosts(ingress)})")


async def get(api: ApiClient, kind: str, name: str | None, output: str | None) -> None:
    structured = render.is_structured(output)
    if kind == "route":
        routes = [(await api.call("route", "get", NameRequest(name=name), RouteReply)).item] if name \
            else (await api.call("route", "list", {}, RouteList)).items
        # whether each is served: an older Route or Ingress may hold its host and path
        every = (await api.call("route", "list", {}, RouteList)).items if name else routes
        losers = unadmitted_routes(every, (await api.call("ingress", "list", {}, IngressList)).items)
        if structured:
            assert output is not None
            say(render.objects([route_object(r, admitted=r.name not in losers) for r in routes], output,
                               one=bool(name)))
            return
        say(render.table(["NAME", "HOST/PORT", "PATH", "SERVICES", "PORT", "TERMINATION", "WILDCARD"],
                         [[r.name, r.host if r.name not in losers else "HostAlreadyClaimed", r.path,
                           _services(r.backends), _route_port(r.backends[0]), "", "None"] for r in routes]))
        return
    ingresses = [(await api.call("ingress", "get", NameRequest(name=name), IngressReply)).item] if name \
        else (await api.call("ingress", "list", {}, IngressList)).items
    if structured:
        assert output is not None
        say(render.objects([ingress_object(i) for i in ingresses], output, one=bool(name)))
        return
    say(render.table(["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"],
                     [[i.name, i.ingress_class or "<none>", _hosts(i), "", "80", render.age(i.created_at)]
                      for i in ingresses]))


async def delete(api: ApiClient, kind: str, name: str) -> None:
    say((await api.call(kind, "delete", NameRequest(name=name), Ack)).message)


def _services(backends: list[Backend]) -> str:
    if len(backends) == 1:
        return backends[0].service
    total = sum(b.weight for b in backends) or 1
    return ",".join(f"{b.service}({round(100 * b.weight / total)}%)" for b in backends)


def _route_port(b: Backend) -> str:
    return b.port_name or (str(b.target_port) if b.target_port is not None else "<all>")


def _hosts(i: Ingress) -> str:
    return ",".join(dict.fromkeys(r.host or "*" for r in i.rules)) or "*"


def _meta(name: str, uid: str, created_at: float, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "uid": uid, "creationTimestamp": resources.timestamp(created_at),
            **({"labels": labels} if labels else {})}


def route_object(r: Route, *, admitted: bool = True) -> resources.Obj:
    def to(b: Backend) -> dict[str, Any]:
        return {"kind": "Service", "name": b.service, "weight": b.weight}

    spec: dict[str, Any] = {"host": r.host, "to": to(r.backends[0]), "wildcardPolicy": "None"}
    if r.path:
        spec["path"] = r.path
    if len(r.backends) > 1:
        spec["alternateBackends"] = [to(b) for b in r.backends[1:]]
    first = r.backends[0]
    if first.port_name or first.target_port is not None:
        spec["port"] = {"targetPort": first.port_name or first.target_port}
    return {"apiVersion": ROUTE_API, "kind": "Route", "metadata": _meta(r.name, r.uid, r.created_at, r.labels),
            "spec": spec, "status": {"ingress": [{"host": r.host, "routerName": "virtbus", "wildcardPolicy": "None",
                                                  "conditions": [_admitted(admitted)]}]}}


def _admitted(admitted: bool) -> dict[str, str]:
    if admitted:
        return {"type": "Admitted", "status": "True"}
    return {"type": "Admitted", "status": "False", "reason": "HostAlreadyClaimed",
            "message": "an older route or ingress holds this host and path"}


def _ingress_backend(b: Backend) -> dict[str, Any]:
    return {"service": {"name": b.service, "port": {"name": b.port_name} if b.port_name else {"number": b.port}}}


def ingress_object(i: Ingress) -> resources.Obj:
    rules = []
    for rule in i.rules:
        out: dict[str, Any] = {"host": rule.host} if rule.host else {}
        if rule.paths:
            out["http"] = {"paths": [{"path": p.path, "pathType": str(p.path_type),
                                      "backend": _ingress_backend(p.backend)} for p in rule.paths]}
        rules.append(out)
    spec: dict[str, Any] = {"rules": rules} if rules else {}
    if i.ingress_class:
        spec["ingressClassName"] = i.ingress_class
    if i.default_backend is not None:
        spec["defaultBackend"] = _ingress_backend(i.default_backend)
    return {"apiVersion": INGRESS_API, "kind": "Ingress", "metadata": _meta(i.name, i.uid, i.created_at, i.labels),
            "spec": spec, "status": {"loadBalancer": {}}}
