"""The node proxy's configuration, pure: host names and paths lead to the Service's endpoints, the most
specific rule and then the oldest object win, weights split a Route's traffic, a Service without
endpoints is a backend with no server, and hostile stored values never become config text."""

from __future__ import annotations

from ipaddress import IPv4Address

import msgspec
import pytest

from handler.haproxycfg import compose_haproxy, servers, service_port
from proto.errors import ApiError
from proto.routes import Backend, HttpPath, HttpRule, Ingress, PathType, Route
from proto.state import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, Service, ServicePort, ServiceType

NODE = IPv4Address("10.99.0.11")


def service(name: str, port: int = 80, target: int = 80, port_name: str = "") -> Service:
    return Service(name=name, uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip="10.96.0.20",
                   ports=[ServicePort(port=port, target_port=target, name=port_name)], selector={"app": name})


def ends(name: str, *ips: str, port: int = 80, port_name: str = "") -> Endpoints:
    return Endpoints(name=name, subsets=[EndpointSubset(addresses=[EndpointAddress(ip=ip) for ip in ips],
                                                        ports=[EndpointPort(port=port, name=port_name)])])


def route(name: str = "web", host: str = "node-vm.apps.example", path: str = "", created: float = 1.0,
          backends: list[Backend] | None = None) -> Route:
    return Route(name=name, uid="u", created_at=created, host=host, path=path,
                 backends=backends or [Backend(service="web")])


def compose(routes: list[Route], ingresses: list[Ingress] | None = None,
            services: list[Service] | None = None, endpoints: list[Endpoints] | None = None) -> str:
    return compose_haproxy(routes, ingresses or [], {s.name: s for s in services or [service("web")]},
                           {e.name: e for e in endpoints or [ends("web", "10.244.0.5", "10.244.1.7")]},
                           address=NODE, port=80)


def block(config: str, header: str) -> list[str]:
    lines = config.split(header + "\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [line.strip() for line in lines]


def test_a_route_leads_its_host_to_the_services_endpoints() -> None:
    config = compose([route()])
    front = block(config, "frontend routes")
    assert front[0] == "bind 10.99.0.11:80"
    assert "acl host_0 req.hdr(host),field(1,:) -i node-vm.apps.example" in front
    assert "use_backend be_route_web if host_0" in front and front[-1] == "default_backend no_route"
    assert block(config, "backend be_route_web") == ["balance roundrobin", "server s0 10.244.0.5:80",
                                                     "server s1 10.244.1.7:80"]
    assert 'http-request return status 404' in config  # an unknown host


def test_paths_match_by_element_and_exact_ones_first() -> None:
    ingress = Ingress(name="shop", uid="u", created_at=0.0, rules=[HttpRule(host="shop.example", paths=[
        HttpPath(path="/", backend=Backend(service="web", port=80)),
        HttpPath(path="/api/", backend=Backend(service="web", port=80)),
        HttpPath(path="/api/v1", path_type=PathType.EXACT, backend=Backend(service="web", port=80))])])
    front = block(compose([], [ingress]), "frontend routes")
    uses = [line for line in front if line.startswith("use_backend")]
    assert uses == ["use_backend be_ingress_shop_0_2 if host_0 path_0",  # exact
                    "use_backend be_ingress_shop_0_1 if host_1 path_1",  # /api and /api/...
                    "use_backend be_ingress_shop_0_0 if host_2"]  # everything else on the host
    assert "acl path_0 path /api/v1" in front
    assert {"acl path_1 path /api", "acl path_1 path_beg /api/"} <= set(front)


def test_the_older_claim_of_a_host_wins_and_hostless_rules_come_last() -> None:
    fallback = Ingress(name="all", uid="u", created_at=0.0, default_backend=Backend(service="web", port=80))
    config = compose([route("newer", created=9.0), route("older", created=2.0)], [fallback])
    uses = [line for line in block(config, "frontend routes") if line.startswith("use_backend")]
    assert uses == ["use_backend be_route_older if host_0", "use_backend be_ingress_all_default"]
    assert "be_route_newer" not in config


def test_weights_split_a_routes_traffic_among_services_and_their_endpoints() -> None:
    r = route(backends=[Backend(service="web", weight=80), Backend(service="canary", weight=20)])
    config = compose([r], services=[service("web"), service("canary")],
                     endpoints=[ends("web", "10.244.0.5", "10.244.1.7"), ends("canary", "10.244.2.9")])
    # web: 40 per endpoint, canary: 20 for its one, scaled so the largest share is 256
    assert block(config, "backend be_route_web")[1:] == ["server s0 10.244.0.5:80 weight 256",
                                                         "server s1 10.244.1.7:80 weight 256",
                                                         "server s2 10.244.2.9:80 weight 128"]
    off = route(backends=[Backend(service="web", weight=100), Backend(service="canary", weight=0)])
    config = compose([off], services=[service("web"), service("canary")],
                     endpoints=[ends("web", "10.244.0.5"), ends("canary", "10.244.2.9")])
    assert block(config, "backend be_route_web")[1:] == ["server s0 10.244.0.5:80"]


def test_ports_are_chosen_as_openshift_and_kubernetes_name_them() -> None:
    svc = Service(name="web", uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip="10.96.0.20",
                  ports=[ServicePort(port=80, target_port=8080, name="http"),
                         ServicePort(port=443, target_port=8443, name="https")])
    assert service_port(svc, Backend(service="web", port=443)) == svc.ports[1]  # an Ingress's service port
    assert service_port(svc, Backend(service="web", target_port=8443)) == svc.ports[1]  # a Route's: endpoints'
    assert service_port(svc, Backend(service="web", target_port=443)) == svc.ports[1]  # or the Service's
    assert service_port(svc, Backend(service="web", port_name="https")) == svc.ports[1]
    assert service_port(svc, Backend(service="web")) == svc.ports[0]
    assert service_port(svc, Backend(service="web", port=8080)) is None
    ep = Endpoints(name="web", subsets=[EndpointSubset(addresses=[EndpointAddress(ip="10.244.0.5")],
                                                       ports=[EndpointPort(port=8080, name="http"),
                                                              EndpointPort(port=8443, name="https")])])
    assert servers([Backend(service="web", port_name="https")], {"web": svc}, {"web": ep}) == \
        (("10.244.0.5", 8443, None),)


def test_a_service_missing_or_without_endpoints_is_a_backend_without_servers() -> None:
    config = compose([route(), route("gone", host="gone.example", backends=[Backend(service="nothing")])],
                     endpoints=[Endpoints(name="web")])
    assert block(config, "backend be_route_web") == ["balance roundrobin"]  # HAProxy answers 503
    assert block(config, "backend be_route_gone") == ["balance roundrobin"]


def test_every_address_when_the_node_has_none_given() -> None:
    config = compose_haproxy([], [], {}, {}, address=None, port=8080)
    assert "bind *:8080" in config and "use_backend" not in config


@pytest.mark.parametrize("hostile", [
    route(host="a.example\nfrontend evil"),
    route(host="a.example if TRUE"),
    route(path="/x\n    bind *:22"),
    route(path="/x y"),
    route(name="../x"),
])
def test_hostile_stored_values_never_become_config_text(hostile: Route) -> None:
    with pytest.raises(ApiError):
        compose([hostile])


def test_hostile_endpoints_never_become_servers() -> None:
    bad = ends("web", "127.0.0.1")
    with pytest.raises(ApiError):
        compose([route()], endpoints=[bad])
    with pytest.raises(ApiError):
        compose([route()], endpoints=[msgspec.structs.replace(bad, subsets=[EndpointSubset(
            addresses=[EndpointAddress(ip="10.0.0.1 backup")], ports=[EndpointPort(port=80)])])])
