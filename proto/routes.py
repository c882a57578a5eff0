"""OpenShift Routes (``route.openshift.io/v1``) and Kubernetes Ingresses (``networking.k8s.io/v1``), as
virtbus keeps them: host names and paths leading to a Service's port, served by every node's HTTP
proxy (handler.haproxycfg). How a manifest becomes one, refused by field path where virtbus cannot
honour it; the checks every stored one passes again. Pure: values in, values out.

Host names and paths end up in the proxy's configuration, so they are held to strict forms: a host is
a lower-case DNS-1123 subdomain (no wildcard), a path a plain absolute URL path of unreserved and
sub-delimiter characters (nothing that quotes, escapes, comments or expands in a config line).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from proto import netcheck
from proto.api import Message
from proto.errors import ApiError, Code
from proto.labels import check_labels
from proto.schema import check_namespace, only_known
from proto.state import State
from proto.validation import check_name

ROUTE_API = "route.openshift.io/v1"
INGRESS_API = "networking.k8s.io/v1"
MAX_RULES = 64
MAX_PATHS = 64  # per rule
MAX_ALL_PATHS = 256  # per Ingress: what fits its bucket's value size with room to spare
MAX_BACKENDS = 4  # a Route's to + alternateBackends, as OpenShift allows (1 + 3)
MAX_WEIGHT = 256
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")
# RFC 3986 unreserved, sub-delims (but ' and $), ':', '@', '%' and '/': never a space, quote, backslash
# or '#', which a proxy's config would read as syntax.
_PATH = re.compile(r"^/[A-Za-z0-9._~%!&()*+,;=:@/-]{0,1023}$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class PathType(enum.StrEnum):
    PREFIX = "Prefix"  # by path elements: /a matches /a, /a/ and /a/b, not /ab
    EXACT = "Exact"
    IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"  # here: as Prefix


class Backend(State, frozen=True):
    """A Service's port: by number (``port``: the Service's port, as an Ingress names it;
    ``target_port``: the endpoints' port, as a Route names it), by name, or (neither) its first port."""

    service: str
    port: int | None = None
    target_port: int | None = None
    port_name: str = ""
    weight: int = 100  # a Route's backends share its traffic by weight (0: none)


class HttpPath(State, frozen=True):
    backend: Backend
    path: str = "/"
    path_type: PathType = PathType.PREFIX


class HttpRule(State, frozen=True):
    host: str = ""  # "": every host
    paths: list[HttpPath] = []  # none: the Ingress's default backend for this host


class Route(State, frozen=True):
    name: str
    uid: str
    created_at: float
    host: str
    backends: list[Backend]  # spec.to first, then spec.alternateBackends
    path: str = ""
    labels: dict[str, str] = {}


class Ingress(State, frozen=True):
    name: str
    uid: str
    created_at: float
    rules: list[HttpRule] = []
    default_backend: Backend | None = None
    ingress_class: str = ""  # accepted and shown; every node's proxy serves every Ingress
    labels: dict[str, str] = {}


class RouteReply(Message, frozen=True):
    item: Route


class RouteList(Message, frozen=True):
    items: list[Route]


class IngressReply(Message, frozen=True):
    item: Ingress


class IngressList(Message, frozen=True):
    items: list[Ingress]


# --- checks (the API's and the stored values') ---------------------------------------------------------
def _bad(field: str, message: str) -> ApiError:
    return ApiError(Code.INVALID, message, field)


def check_host(host: object, field: str) -> str:
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise _bad(field, f"{field} must be a lower-case DNS name (a DNS-1123 subdomain, no wildcard, at most "
                          f"253 characters), not {str(host)[:80]!r}")
    return host


def check_path(path: object, field: str) -> str:
    if not isinstance(path, str) or not _PATH.fullmatch(path):
        raise _bad(field, f"{field} must be an absolute URL path of A-Za-z0-9 and ._~%!&()*+,;=:@/- (at most "
                          f"1024 characters), not {str(path)[:80]!r}")
    return path


def check_backend(b: Backend, field: str) -> None:
    check_name(b.service, f"{field}.service", "Service name")
    if b.port is not None:
        netcheck.port(b.port, f"{field}.port")
    if b.target_port is not None:
        netcheck.port(b.target_port, f"{field}.targetPort")
    if b.port_name and not _PORT_NAME.fullmatch(b.port_name):
        raise _bad(f"{field}.portName", f"{b.port_name!r} is not a port name")
    if not 0 <= b.weight <= MAX_WEIGHT:
        raise _bad(f"{field}.weight", f"a weight is 0 to {MAX_WEIGHT}")


def check_route(key: str, route: Route) -> None:
    check_name(key, "key", "key")
    if key != route.name:
        raise _bad("key", f"the key {key!r} is not the Route {route.name!r} it holds")
    check_name(route.uid, "uid", "uid")
    check_host(route.host, "host")
    if route.path:
        check_path(route.path, "path")
    if not 1 <= len(route.backends) <= MAX_BACKENDS:
        raise _bad("backends", f"a Route has 1 to {MAX_BACKENDS} backends")
    for i, b in enumerate(route.backends):
        check_backend(b, f"backends[{i}]")
    check_labels(route.labels, "labels")


def check_ingress(key: str, ingress: Ingress) -> None:
    check_name(key, "key", "key")
    if key != ingress.name:
        raise _bad("key", f"the key {key!r} is not the Ingress {ingress.name!r} it holds")
    check_name(ingress.uid, "uid", "uid")
    if len(ingress.rules) > MAX_RULES:
        raise _bad("rules", f"at most {MAX_RULES} rules")
    for i, rule in enumerate(ingress.rules):
        if rule.host:
            check_host(rule.host, f"rules[{i}].host")
        if len(rule.paths) > MAX_PATHS:
            raise _bad(f"rules[{i}].paths", f"at most {MAX_PATHS} paths")
        for j, p in enumerate(rule.paths):
            check_path(p.path, f"rules[{i}].paths[{j}].path")
            check_backend(p.backend, f"rules[{i}].paths[{j}].backend")
    if sum(len(rule.paths) for rule in ingress.rules) > MAX_ALL_PATHS:
        raise _bad("rules", f"at most {MAX_ALL_PATHS} paths in all")
    if ingress.default_backend is not None:
        check_backend(ingress.default_backend, "defaultBackend")
    if ingress.ingress_class:
        check_name(ingress.ingress_class, "ingressClass", "ingress class")
    check_labels(ingress.labels, "labels")


# --- manifests ------------------------------------------------------------------------------------------
def _map(obj: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ApiError(Code.BAD_REQUEST, f"{field or 'the manifest'} must be an object", field or None)
    return obj


def _list(obj: Any, field: str, most: int) -> list[Any]:
    if not isinstance(obj, list) or len(obj) > most:
        raise _bad(field, f"{field} must be a list of at most {most}")
    return obj


def _head(raw: Any, api: str, kind: str) -> tuple[Mapping[str, Any], str, dict[str, str]]:
    obj = _map(raw, "")
    if obj.get("apiVersion") != api or obj.get("kind") != kind:
        raise ApiError(Code.BAD_REQUEST, f"a {api} {kind} manifest is expected", "kind")
    only_known(obj, "", ("apiVersion", "kind", "metadata", "spec"), ("status",))
    meta = _map(obj.get("metadata"), "metadata")
    only_known(meta, "metadata", ("name", "namespace", "labels"),
          ("annotations", "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"))
    name = meta.get("name")
    if not isinstance(name, str):
        raise ApiError(Code.BAD_REQUEST, "metadata.name is required", "metadata.name")
    check_name(name, "metadata.name", f"{kind} name")
    check_namespace(meta)
    labels = dict(_map(meta.get("labels") or {}, "metadata.labels"))
    check_labels(labels, "metadata.labels")
    return _map(obj.get("spec"), "spec"), name, labels


def _weight(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
        raise _bad(field, f"{field} must be a whole number from 0 to {MAX_WEIGHT}")
    return value


def _route_backend(raw: Any, field: str, port: tuple[int | None, str]) -> Backend:
    to = _map(raw, field)
    only_known(to, field, ("kind", "name", "weight"))
    if to.get("kind", "Service") != "Service":
        raise _bad(f"{field}.kind", f"{field}.kind must be Service")
    name = to.get("name")
    if not isinstance(name, str):
        raise _bad(f"{field}.name", f"{field}.name is required")
    check_name(name, f"{field}.name", "Service name")
    return Backend(service=name, target_port=port[0], port_name=port[1],
                   weight=_weight(to.get("weight", 100), f"{field}.weight"))


def parse_route(raw: Any, *, uid: str, now: float) -> Route:
    """An OpenShift Route: host (required: virtbus makes up no names), path (a prefix), to and
    alternateBackends (Services, by weight), port.targetPort (the endpoints' port number, or a
    Service port's name). TLS is refused by its path: the proxy serves plain HTTP."""
    spec, name, labels = _head(raw, ROUTE_API, "Route")
    only_known(spec, "spec", ("host", "path", "to", "alternateBackends", "port", "wildcardPolicy", "tls"))
    if spec.get("tls") is not None:
        raise _bad("spec.tls", "spec.tls is not supported: the nodes' proxy serves plain HTTP (no edge, "
                               "passthrough or reencrypt termination)")
    if spec.get("wildcardPolicy", "None") != "None":
        raise _bad("spec.wildcardPolicy", "only wildcardPolicy None is supported")
    if "host" not in spec:
        raise _bad("spec.host", "spec.host is required: virtbus generates no host names")
    host = check_host(spec["host"], "spec.host")
    path = spec.get("path", "")
    if path:
        path = check_path(path, "spec.path")
    port: tuple[int | None, str] = (None, "")
    if spec.get("port") is not None:
        p = _map(spec["port"], "spec.port")
        only_known(p, "spec.port", ("targetPort",))
        target = p.get("targetPort")
        if isinstance(target, str) and not target.isdigit():
            if not _PORT_NAME.fullmatch(target):
                raise _bad("spec.port.targetPort", "spec.port.targetPort must be a port number or name")
            port = (None, target)
        else:
            port = (netcheck.port(int(target) if isinstance(target, str) else target, "spec.port.targetPort"), "")
    backends = [_route_backend(spec.get("to"), "spec.to", port)]
    for i, alt in enumerate(_list(spec.get("alternateBackends") or [], "spec.alternateBackends", MAX_BACKENDS - 1)):
        backends.append(_route_backend(alt, f"spec.alternateBackends[{i}]", port))
    return Route(name=name, uid=uid, created_at=now, host=host, path=path, backends=backends, labels=labels)


def _ingress_backend(raw: Any, field: str) -> Backend:
    b = _map(raw, field)
    if "resource" in b:
        raise _bad(f"{field}.resource", "resource backends are not supported: name a Service")
    only_known(b, field, ("service",))
    svc = _map(b.get("service"), f"{field}.service")
    only_known(svc, f"{field}.service", ("name", "port"))
    name = svc.get("name")
    if not isinstance(name, str):
        raise _bad(f"{field}.service.name", f"{field}.service.name is required")
    check_name(name, f"{field}.service.name", "Service name")
    port = _map(svc.get("port"), f"{field}.service.port")
    only_known(port, f"{field}.service.port", ("number", "name"))
    if ("number" in port) == ("name" in port):
        raise _bad(f"{field}.service.port", f"{field}.service.port needs a number or a name (one of them)")
    if "number" in port:
        return Backend(service=name, port=netcheck.port(port["number"], f"{field}.service.port.number"))
    if not isinstance(port["name"], str) or not _PORT_NAME.fullmatch(port["name"]):
        raise _bad(f"{field}.service.port.name", f"{field}.service.port.name must be a port name")
    return Backend(service=name, port_name=port["name"])


def parse_ingress(raw: Any, *, uid: str, now: float) -> Ingress:
    """A Kubernetes Ingress: rules (host, or none for every host; http.paths with pathType Prefix,
    Exact or ImplementationSpecific (read as Prefix) to a Service's port) and defaultBackend. TLS is
    refused by its path; the class is accepted and every node serves the Ingress whatever it says."""
    spec, name, labels = _head(raw, INGRESS_API, "Ingress")
    only_known(spec, "spec", ("rules", "defaultBackend", "ingressClassName", "tls"))
    if spec.get("tls"):
        raise _bad("spec.tls", "spec.tls is not supported: the nodes' proxy serves plain HTTP")
    default = _ingress_backend(spec["defaultBackend"], "spec.defaultBackend") if spec.get("defaultBackend") else None
    rules = []
    for i, raw_rule in enumerate(_list(spec.get("rules") or [], "spec.rules", MAX_RULES)):
        field = f"spec.rules[{i}]"
        rule = _map(raw_rule, field)
        only_known(rule, field, ("host", "http"))
        host = check_host(rule["host"], f"{field}.host") if rule.get("host") else ""
        if rule.get("http") is None:
            if default is None:
                raise _bad(f"{field}.http", f"{field}.http is required without spec.defaultBackend")
            rules.append(HttpRule(host=host))
            continue
        http = _map(rule["http"], f"{field}.http")
        only_known(http, f"{field}.http", ("paths",))
        paths = []
        for j, raw_path in enumerate(_list(http.get("paths"), f"{field}.http.paths", MAX_PATHS)):
            pf = f"{field}.http.paths[{j}]"
            p = _map(raw_path, pf)
            only_known(p, pf, ("path", "pathType", "backend"))
            try:
                path_type = PathType(str(p.get("pathType")))
            except ValueError:
                raise _bad(f"{pf}.pathType", f"{pf}.pathType must be Prefix, Exact or ImplementationSpecific") from None
            paths.append(HttpPath(path=check_path(p.get("path", "/"), f"{pf}.path"), path_type=path_type,
                                  backend=_ingress_backend(p.get("backend"), f"{pf}.backend")))
        if not paths:
            raise _bad(f"{field}.http.paths", f"{field}.http.paths needs at least one path")
        rules.append(HttpRule(host=host, paths=paths))
    if sum(len(rule.paths) for rule in rules) > MAX_ALL_PATHS:
        raise _bad("spec.rules", f"at most {MAX_ALL_PATHS} paths in all")
    if not rules and default is None:
        raise _bad("spec", "an Ingress needs spec.rules or spec.defaultBackend")
    ingress_class = spec.get("ingressClassName") or ""
    if ingress_class:
        check_name(ingress_class, "spec.ingressClassName", "ingress class")
    return Ingress(name=name, uid=uid, created_at=now, rules=rules, default_backend=default,
                   ingress_class=ingress_class, labels=labels)


# --- who holds a host and path ----------------------------------------------------------------------------
Origin = tuple[float, str, str]  # created_at, kind, name: between equals the older wins (OpenShift's rule)


def claim(host: str, exact: bool, path: str) -> tuple[str, bool, str]:
    """What two rules cannot both hold: a host ("" for every one) with an exact path or a prefix."""
    return host, exact, path.rstrip("/") or "/"


def rank(host: str, exact: bool, path: str, origin: Origin) -> tuple[bool, bool, int, Origin]:
    """The order rules are tried in (the first match wins): a host before every host, an exact path
    before prefixes, a longer prefix before a shorter one, then the older object."""
    return not host, not exact, -len(path.rstrip("/")), origin


def _claims(routes: list[Route], ingresses: list[Ingress]) -> list[tuple[tuple[bool, bool, int, Origin],
                                                                         tuple[str, bool, str]]]:
    out = [(rank(r.host, False, r.path or "/", (r.created_at, "route", r.name)), claim(r.host, False, r.path or "/"))
           for r in routes]
    for i in ingresses:
        origin = (i.created_at, "ingress", i.name)
        for rule in i.rules:
            paths = [(p.path_type is PathType.EXACT, p.path) for p in rule.paths] or [(False, "/")]
            out += [(rank(rule.host, exact, path, origin), claim(rule.host, exact, path)) for exact, path in paths]
        if i.default_backend is not None:
            out.append((rank("", False, "/", origin), claim("", False, "/")))
    return out


def unadmitted_routes(routes: list[Route], ingresses: list[Ingress]) -> set[str]:
    """The Routes whose host and path an older Route or Ingress holds: the proxy does not serve them
    (``oc get routes`` says HostAlreadyClaimed)."""
    held: dict[tuple[str, bool, str], Origin] = {}
    for ranked, key in sorted(_claims(routes, ingresses)):
        held.setdefault(key, ranked[3])
    return {r.name for r in routes if held[claim(r.host, False, r.path or "/")] != (r.created_at, "route", r.name)}
