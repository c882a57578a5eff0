"""``get routes|ingresses -o yaml`` prints OpenShift's and Kubernetes' objects, which apply back to the
same Route or Ingress; the tables have oc's and kubectl's columns."""

from __future__ import annotations

import yaml

from ctl import render
from ctl.routecmd import _route_port, _services, ingress_object, route_object
from proto.routes import parse_ingress, parse_route
from tests.unit.test_routes import INGRESS, ROUTE


def test_a_printed_route_applies_back_to_the_same_route() -> None:
    route = parse_route(ROUTE, uid="u1", now=1700000000.0)
    printed = yaml.safe_load(render.objects([route_object(route)], "yaml", one=True))
    assert printed["status"]["ingress"][0]["host"] == "node-vm.apps.example"
    assert parse_route(printed, uid="u1", now=1700000000.0) == route
    assert _services(route.backends) == "web(80%),web2(20%)" and _route_port(route.backends[0]) == "http"


def test_a_printed_ingress_applies_back_to_the_same_ingress() -> None:
    ingress = parse_ingress(INGRESS, uid="u1", now=1700000000.0)
    printed = yaml.safe_load(render.objects([ingress_object(ingress)], "yaml", one=True))
    assert printed["kind"] == "Ingress" and printed["spec"]["ingressClassName"] == "nginx"
    assert parse_ingress(printed, uid="u1", now=1700000000.0) == ingress


def test_the_cli_takes_the_kinds_as_oc_and_kubectl_spell_them() -> None:
    from ctl.cli import parser
    from ctl.routecmd import KINDS

    for kind in ("route", "routes", "ingress", "ingresses", "ing"):
        assert parser().parse_args(["delete", kind, "web"]).kind == kind and kind in KINDS
    assert parser().parse_args(["get", "routes", "-o", "yaml"]).output == "yaml"


def test_a_route_that_lost_its_host_says_so_as_openshift_does() -> None:
    route = parse_route(ROUTE, uid="u1", now=0.0)
    condition = route_object(route, admitted=False)["status"]["ingress"][0]["conditions"][0]
    assert condition["status"] == "False" and condition["reason"] == "HostAlreadyClaimed"
