"""The node's HTTP proxy configuration (HAProxy), composed from Routes, Ingresses, Services and
Endpoints. Pure: values in, the text of haproxy.cfg out.

One frontend on the node's address: each host name (and path) leads to a backend whose servers are
the Service's endpoints on the chosen port, as OpenShift's router does, rather than the Service's
virtual IP. So HAProxy balances and retries over the real servers itself, a Route's backends share
traffic by weight server by server, a headless Service works too, and a Service with no endpoint is
a backend with no server: HAProxy answers 503 at once. (The price: a graceful reload when endpoints
change, which HAProxy's master makes without dropping a connection.) A request for no known host or
path gets 404 from HAProxy itself.

Which rule wins, as HAProxy takes the first match: a rule with a host before one for every host, an
exact path before prefixes, a longer prefix before a shorter one, and between equals the oldest object
(OpenShift admits the first Route to claim a host); the rest are left out. Every value is checked
again where it becomes config text (ApiError otherwise), whatever wrote the buckets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from handler.servicerules import targets
from proto import netcheck
from proto.routes import Backend, Ingress, Origin, PathType, Route, check_host, check_path, claim, rank
from proto.state import Endpoints, Service, ServicePort
from proto.validation import check_name

MAX_SERVER_WEIGHT = 256
GLOBAL = """\
global
    maxconn 4096
    # old workers let go of their last connections at most this long after a reload
    hard-stop-after 30s

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 10s
    option forwardfor
    option redispatch
    retries 2
"""
NO_ROUTE = """\
backend no_route
    http-request return status 404 content-type text/plain string "no route for this host and path"
"""


@dataclass(frozen=True)
class _Rule:
    host: str  # "": every host
    exact: bool
    path: str  # "" or "/": every path
    backend: str
    servers: tuple[tuple[str, int, int | None], ...]  # address, port, weight (None: equal shares)
    origin: Origin

    @property
    def rank(self) -> tuple[bool, bool, int, Origin]:
        return rank(self.host, self.exact, self.path, self.origin)

    @property
    def claim(self) -> tuple[str, bool, str]:
        return claim(self.host, self.exact, self.path)


def service_port(service: Service, backend: Backend) -> ServicePort | None:
    """The Service port a backend names: by name; by the Service's port (an Ingress's number); by the
    endpoints' port (a Route's targetPort), else by the Service's port; with neither, its first."""
    ports = service.ports
    if backend.port_name:
        return next((p for p in ports if p.name == backend.port_name), None)
    if backend.port is not None:
        return next((p for p in ports if p.port == backend.port), None)
    if backend.target_port is not None:
        return next((p for p in ports if p.target_port == backend.target_port),
                    next((p for p in ports if p.port == backend.target_port), None))
    return ports[0] if ports else None


def servers(backends: list[Backend], services: Mapping[str, Service],
            endpoints: Mapping[str, Endpoints]) -> tuple[tuple[str, int, int | None], ...]:
    """Every endpoint of every backend; with several weighted backends, each server's weight is its
    Service's share divided among that Service's endpoints (as OpenShift's router splits it)."""
    found: list[tuple[Backend, list[tuple[str, int]]]] = []
    for b in backends:
        service = services.get(b.service)
        port = service_port(service, b) if service is not None else None
        if service is None or port is None or port.protocol != "TCP" or b.weight == 0:
            continue
        to = targets(port, endpoints.get(service.name))
        if to:
            found.append((b, to))
    if len(found) <= 1:  # one Service: its endpoints share alike
        return tuple((ip, port, None) for _, to in found for ip, port in to)
    shares = [(b.weight / len(to), to) for b, to in found]
    top = max((share for share, _ in shares), default=1.0)
    return tuple((ip, port, max(1, round(share / top * MAX_SERVER_WEIGHT))) for share, to in shares for ip, port in to)


def _rules(routes: list[Route], ingresses: list[Ingress], services: Mapping[str, Service],
           endpoints: Mapping[str, Endpoints]) -> list[_Rule]:
    out = []
    for r in routes:
        check_name(r.name, "route", "Route name")
        out.append(_Rule(host=check_host(r.host, "host"), exact=False, path=check_path(r.path or "/", "path"),
                         backend=f"be_route_{r.name}", servers=servers(r.backends, services, endpoints),
                         origin=(r.created_at, "route", r.name)))
    for ing in ingresses:
        check_name(ing.name, "ingress", "Ingress name")
        origin = (ing.created_at, "ingress", ing.name)
        default = servers([ing.default_backend], services, endpoints) if ing.default_backend else ()
        for i, rule in enumerate(ing.rules):
            host = check_host(rule.host, "host") if rule.host else ""
            if not rule.paths and ing.default_backend is not None:
                out.append(_Rule(host=host, exact=False, path="/", backend=f"be_ingress_{ing.name}_default",
                                 servers=default, origin=origin))
            for j, p in enumerate(rule.paths):
                out.append(_Rule(host=host, exact=p.path_type is PathType.EXACT, path=check_path(p.path, "path"),
                                 backend=f"be_ingress_{ing.name}_{i}_{j}",
                                 servers=servers([p.backend], services, endpoints), origin=origin))
        if ing.default_backend is not None:
            out.append(_Rule(host="", exact=False, path="/", backend=f"be_ingress_{ing.name}_default",
                             servers=default, origin=origin))
    return out


def compose_haproxy(routes: list[Route], ingresses: list[Ingress], services: Mapping[str, Service],
                    endpoints: Mapping[str, Endpoints], *, address: IPv4Address | None, port: int) -> str:
    """haproxy.cfg for this node: listening on ``address`` (None: every address) and ``port``."""
    bind = f"{netcheck.ipv4(str(address), 'address')}" if address is not None else "*"
    lines = [GLOBAL, "frontend routes", f"    bind {bind}:{netcheck.port(port, 'port')}"]
    chosen: list[_Rule] = []
    claimed = set()
    for rule in sorted(_rules(routes, ingresses, services, endpoints), key=lambda r: r.rank):
        if rule.claim not in claimed:  # an older object holds this host and path already
            claimed.add(rule.claim)
            chosen.append(rule)
    for n, rule in enumerate(chosen):
        condition = []
        if rule.host:
            lines.append(f"    acl host_{n} req.hdr(host),field(1,:) -i {rule.host}")
            condition.append(f"host_{n}")
        path = rule.path.rstrip("/")
        if rule.exact:
            lines.append(f"    acl path_{n} path {rule.path}")
        elif path:
            lines += [f"    acl path_{n} path {path}", f"    acl path_{n} path_beg {path}/"]
        if rule.exact or path:
            condition.append(f"path_{n}")
        lines.append(f"    use_backend {rule.backend} if {' '.join(condition)}" if condition
                     else f"    use_backend {rule.backend}")
    lines += ["    default_backend no_route", ""]
    for backend in sorted({r.backend: r for r in chosen}.values(), key=lambda r: r.backend):
        lines += [f"backend {backend.backend}", "    balance roundrobin"]
        for i, (ip, to_port, weight) in enumerate(backend.servers):
            server = f"{netcheck.host_address(ip, 'endpoint')}:{netcheck.port(to_port, 'endpoint port')}"
            lines.append(f"    server s{i} {server}" + (f" weight {weight}" if weight is not None else ""))
        lines.append("")
    lines.append(NO_ROUTE)
    return "\n".join(lines)
