"""Routes and Ingresses as their manifests are written: accepted as they are where virtbus can serve
them, refused by field path where not, and held to the same rules when read back from a bucket."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from proto import stored
from proto.errors import ApiError, Code
from proto.routes import Backend, HttpPath, HttpRule, Ingress, PathType, Route, parse_ingress, parse_route

ROUTE: dict[str, Any] = {
    "apiVersion": "route.openshift.io/v1", "kind": "Route",
    "metadata": {"name": "web", "namespace": "default", "annotations": {"openshift.io/host.generated": "false"}},
    "spec": {"host": "node-vm.apps.example", "path": "/shop", "to": {"kind": "Service", "name": "web", "weight": 80},
             "alternateBackends": [{"kind": "Service", "name": "web2", "weight": 20}],
             "port": {"targetPort": "http"}, "wildcardPolicy": "None"}}
INGRESS: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
    "spec": {"ingressClassName": "nginx",
             "defaultBackend": {"service": {"name": "fallback", "port": {"number": 8080}}},
             "rules": [{"host": "a.example", "http": {"paths": [
                 {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                 {"path": "/api/v1", "pathType": "Exact",
                  "backend": {"service": {"name": "api", "port": {"name": "http"}}}}]}},
                       {"host": "b.example"}]}}


def with_(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def test_a_route_as_openshift_writes_it() -> None:
    route = parse_route(ROUTE, uid="u1", now=5.0)
    assert route == Route(name="web", uid="u1", created_at=5.0, host="node-vm.apps.example", path="/shop",
                          backends=[Backend(service="web", port_name="http", weight=80),
                                    Backend(service="web2", port_name="http", weight=20)])
    numbered = parse_route(with_(ROUTE, "spec.port", {"targetPort": 8080}), uid="u", now=0)
    assert numbered.backends[0].target_port == 8080 and not numbered.backends[0].port_name
    plain = parse_route(with_(with_(ROUTE, "spec.port", ...), "spec.alternateBackends", ...), uid="u", now=0)
    assert plain.backends == [Backend(service="web", weight=80)]


def test_an_ingress_as_kubernetes_writes_it() -> None:
    ingress = parse_ingress(INGRESS, uid="u1", now=5.0)
    assert ingress.ingress_class == "nginx"
    assert ingress.default_backend == Backend(service="fallback", port=8080)
    assert ingress.rules == [
        HttpRule(host="a.example", paths=[
            HttpPath(path="/", path_type=PathType.PREFIX, backend=Backend(service="web", port=80)),
            HttpPath(path="/api/v1", path_type=PathType.EXACT, backend=Backend(service="api", port_name="http"))]),
        HttpRule(host="b.example")]


@pytest.mark.parametrize(("path", "value", "field"), [
    ("spec.tls", {"termination": "edge"}, "spec.tls"),
    ("spec.host", ..., "spec.host"),
    ("spec.host", "*.apps.example", "spec.host"),
    ("spec.host", "Node-VM.apps.example", "spec.host"),
    ("spec.host", "a.example\n    use_backend evil", "spec.host"),
    ("spec.path", "/a b", "spec.path"),
    ("spec.path", "/a#b", "spec.path"),
    ("spec.path", '/a"', "spec.path"),
    ("spec.path", "shop", "spec.path"),
    ("spec.to.kind", "Deployment", "spec.to.kind"),
    ("spec.to.name", "../etc", "spec.to.name"),
    ("spec.to.weight", 300, "spec.to.weight"),
    ("spec.wildcardPolicy", "Subdomain", "spec.wildcardPolicy"),
    ("spec.subdomain", "x", "spec.subdomain"),
    ("spec.port", {"targetPort": 70000}, "spec.port.targetPort"),
    ("spec.alternateBackends", [{"name": f"s{i}"} for i in range(4)], "spec.alternateBackends"),
    ("metadata.namespace", "prod", "metadata.namespace"),
])
def test_a_route_virtbus_cannot_serve_is_refused_by_its_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_route(with_(ROUTE, path, value), uid="u", now=0)
    assert refused.value.field == field and refused.value.code in (Code.INVALID, Code.BAD_REQUEST)


@pytest.mark.parametrize(("path", "value", "field"), [
    ("spec.tls", [{"hosts": ["a.example"], "secretName": "cert"}], "spec.tls"),
    ("spec.rules.0.host", "*.example", "spec.rules[0].host"),
    ("spec.rules.0.http.paths.0.pathType", ..., "spec.rules[0].http.paths[0].pathType"),
    ("spec.rules.0.http.paths.0.pathType", "Regex", "spec.rules[0].http.paths[0].pathType"),
    ("spec.rules.0.http.paths.0.path", "/x'y", "spec.rules[0].http.paths[0].path"),
    ("spec.rules.0.http.paths.0.backend", {"resource": {"kind": "Bucket", "name": "b"}},
     "spec.rules[0].http.paths[0].backend.resource"),
    ("spec.rules.0.http.paths.0.backend.service.port", {"number": 80, "name": "http"},
     "spec.rules[0].http.paths[0].backend.service.port"),
    ("spec.rules.0.http.paths.0.backend.service.port", {"name": "Not A Name"},
     "spec.rules[0].http.paths[0].backend.service.port.name"),
    ("spec.rules.0.http.paths", [], "spec.rules[0].http.paths"),
    ("spec.defaultBackend", ..., "spec.rules[1].http"),
    ("spec.ingressClassName", "Bad_Class", "spec.ingressClassName"),
])
def test_an_ingress_virtbus_cannot_serve_is_refused_by_its_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_ingress(with_(INGRESS, path, value), uid="u", now=0)
    assert refused.value.field == field


def test_the_wrong_kind_is_a_bad_request() -> None:
    with pytest.raises(ApiError) as refused:
        parse_route({**ROUTE, "apiVersion": "v1"}, uid="u", now=0)
    assert refused.value.code is Code.BAD_REQUEST
    with pytest.raises(ApiError):
        parse_ingress({**INGRESS, "apiVersion": "networking.k8s.io/v1beta1"}, uid="u", now=0)


def test_stored_routes_and_ingresses_are_checked_again() -> None:
    route = parse_route(ROUTE, uid="u1", now=0)
    stored.validator(Route)("web", route)
    ingress = parse_ingress(INGRESS, uid="u1", now=0)
    stored.validator(Ingress)("web", ingress)
    hostile = [
        ("web", msgspec.structs.replace(route, host="a.example use_backend x")),
        ("web", msgspec.structs.replace(route, path="/a\nfrontend evil")),
        ("web", msgspec.structs.replace(route, backends=[])),
        ("other", route),
        ("web", msgspec.structs.replace(route, backends=[Backend(service="web", weight=-1)])),
    ]
    for key, value in hostile:
        with pytest.raises(ApiError):
            stored.validator(Route)(key, value)
    bad_rule = HttpRule(host="a.example", paths=[HttpPath(path="/x y", backend=Backend(service="web"))])
    with pytest.raises(ApiError):
        stored.validator(Ingress)("web", msgspec.structs.replace(ingress, rules=[bad_rule]))
    with pytest.raises(ApiError):
        stored.validator(Ingress)("web", msgspec.structs.replace(ingress, default_backend=Backend(service="A")))


def test_the_older_claim_of_a_host_and_path_is_admitted_the_newer_not() -> None:
    from proto.routes import unadmitted_routes

    def r(name: str, created: float, host: str = "a.example", path: str = "") -> Route:
        return Route(name=name, uid="u", created_at=created, host=host, path=path, backends=[Backend(service="s")])

    routes = [r("newer", 5.0), r("older", 1.0), r("other-path", 9.0, path="/api/"), r("other-host", 9.0, "b.example"),
              r("same-path", 10.0, path="/api")]
    assert unadmitted_routes(routes, []) == {"newer", "same-path"}  # /api/ and /api are one prefix
    first = Ingress(name="ing", uid="u", created_at=0.5, rules=[HttpRule(host="a.example", paths=[
        HttpPath(path="/", backend=Backend(service="s", port=80)),
        HttpPath(path="/api", path_type=PathType.EXACT, backend=Backend(service="s", port=80))])])
    assert unadmitted_routes(routes, [first]) == {"newer", "older", "same-path"}  # an exact /api is no prefix
