"""The node's HTTP proxy for real: composed configs pass ``haproxy -c``; a real HAProxy, started by the
router in a scratch namespace, leads a Host header to a local web server standing in for a VM, answers
404 for a host it does not know, reloads in place (same master) when a Route changes, is adopted by a
new router from its pidfile, and is gone once the router stops. And the API stores and refuses them."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import yaml

from handler.haproxycfg import compose_haproxy
from handler.router import Haproxy, NodeRouter
from proto import subjects
from proto.routes import Backend, HttpPath, HttpRule, Ingress, PathType, Route
from proto.state import EndpointAddress, EndpointPort, Endpoints, EndpointSubset, Service, ServicePort, ServiceType
from servicekit import processes
from servicekit.informer import Informer
from servicekit.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.integration
POD = "10.77.0.1"  # the stand-in VM's address, in the scratch namespace
NODE = "10.77.0.2"  # the node's address, where HAProxy listens


async def heard(informer: Informer[Any], key: str, check: Callable[[Any], bool]) -> None:
    """Until the router's informer has the value written: its syncs read the cache, and in a handler
    each comes after a change heard (a write in this process is heard a moment later)."""
    deadline = time.monotonic() + 10
    while (entry := informer.entries.get(key)) is None or not check(entry.value):
        assert time.monotonic() < deadline, f"{key}: the write was never heard"
        await asyncio.sleep(0.02)


def haproxy() -> str:
    found = shutil.which("haproxy")
    if found is None:
        pytest.fail("haproxy is needed: run scripts/setup.sh")
    return found


def check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run([haproxy(), "-c", "-f", str(path)], capture_output=True, text=True, check=False)


WEB = Service(name="web", uid="u", type=ServiceType.CLUSTER_IP, created_at=0.0, cluster_ip="10.96.0.20",
              selector={"app": "web"}, ports=[ServicePort(port=80, target_port=8099, name="http")])
WEB_ENDS = Endpoints(name="web", subsets=[EndpointSubset(addresses=[EndpointAddress(ip=POD)],
                                                         ports=[EndpointPort(port=8099, name="http")])])


def test_composed_configs_pass_haproxy_check(tmp_path: Path) -> None:
    assert check("frontend x\n    bind *:80\n    use_backend nowhere\n", tmp_path).returncode != 0  # it can fail
    ingress = Ingress(name="shop", uid="u", created_at=0.0, default_backend=Backend(service="web", port=80),
                      rules=[HttpRule(host="shop.example", paths=[
                          HttpPath(path="/api/", backend=Backend(service="web", port_name="http")),
                          HttpPath(path="/api/v1", path_type=PathType.EXACT, backend=Backend(service="web", port=80)),
                      ]), HttpRule(host="b.example")])
    routes = [Route(name="web", uid="u", created_at=1.0, host="node-vm.apps.example", path="/shop",
                    backends=[Backend(service="web", weight=70), Backend(service="gone", weight=30)])]
    for config in (compose_haproxy(routes, [ingress], {"web": WEB}, {"web": WEB_ENDS}, address=IPv4Address(NODE),
                                   port=80),
                   compose_haproxy([], [], {}, {}, address=None, port=8080)):
        done = check(config, tmp_path)
        assert done.returncode == 0, done.stderr + config


@pytest.fixture
def web_server(scratch_netns: str, tmp_path: Path) -> Iterator[str]:
    """A web server on POD:8099 in the scratch namespace, and the node's address beside it."""
    for address in (POD, NODE):
        subprocess.run(["ip", "-n", scratch_netns, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", scratch_netns, "link", "set", "lo", "up"], check=True)
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("hostname: stand-in\n")
    server = subprocess.Popen(["ip", "netns", "exec", scratch_netns, sys.executable, "-m", "http.server", "8099",
                               "--bind", POD, "--directory", str(root)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        yield scratch_netns
    finally:
        processes.end([server.pid], 5)
        server.wait()


def curl(netns: str, host: str, path: str = "/") -> tuple[int, str]:
    done = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "-m", "5", "-H", f"Host: {host}",
                           "-w", "\n%{http_code}", f"http://{NODE}:8080{path}"],
                          capture_output=True, text=True, check=False)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


async def until(netns: str, host: str, code: int) -> str:
    for _ in range(100):
        got, body = await asyncio.to_thread(curl, netns, host)
        if got == code:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{host}: {got} {body}")


async def test_a_real_haproxy_leads_a_host_to_its_service_and_reloads_in_place(
        store: Store, web_server: str, tmp_path: Path) -> None:
    haproxy()
    netns = web_server
    await store.bucket(subjects.BUCKET_SERVICES, Service).put("web", WEB)
    await store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints).put("web", WEB_ENDS)
    routes = store.bucket(subjects.BUCKET_ROUTES, Route)
    await routes.put("web", Route(name="web", uid="u", created_at=0.0, host="node-vm.apps.example",
                                  backends=[Backend(service="web", port_name="http")]))
    directory = tmp_path / "router"
    proxy = Haproxy(directory, netns, tmp_path / "haproxy.log")
    router = NodeRouter(store, proxy, address=IPv4Address(NODE), port=8080)
    try:
        await router.sync()
        assert "hostname: stand-in" in await until(netns, "node-vm.apps.example", 200)
        assert (await asyncio.to_thread(curl, netns, "NODE-VM.apps.example:8080"))[0] == 200  # as browsers send it
        assert await until(netns, "unknown.example", 404) == "no route for this host and path"
        master = proxy.pid
        assert master is not None and (directory / "haproxy.pid").read_text().split()[0] == str(master)

        # reloads while requests keep coming: none of them is refused or dropped
        loop = ("for i in $(seq 300); do curl -s -o /dev/null -m 5 -w '%{http_code}\\n' "
                f"-H 'Host: node-vm.apps.example' http://{NODE}:8080/; done")
        requests = asyncio.create_task(asyncio.to_thread(
            subprocess.run, ["ip", "netns", "exec", netns, "sh", "-c", loop], capture_output=True, text=True))
        reloads = 0
        while not requests.done() and reloads < 20:  # reload again and again while they come
            await routes.put(f"extra{reloads}", Route(name=f"extra{reloads}", uid="u", created_at=1.0,
                                                      host=f"x{reloads}.example", backends=[Backend(service="web")]))
            await heard(router.routes, f"extra{reloads}", lambda _: True)
            await router.sync()
            reloads += 1
        assert reloads >= 2, "the requests ended before the reloads began"
        codes = (await requests).stdout.split()
        assert codes == ["200"] * 300, codes
        # reloads back to back: each one done before the next, the same master throughout
        for _ in range(10):
            await asyncio.to_thread(proxy.reload)
        assert proxy.pid == master and proxy.alive()

        await routes.put("web", Route(name="web", uid="u", created_at=0.0, host="moved.apps.example",
                                      backends=[Backend(service="web", port_name="http")]))
        await heard(router.routes, "web", lambda route: route.host == "moved.apps.example")
        await router.sync()
        assert "hostname: stand-in" in await until(netns, "moved.apps.example", 200)
        await until(netns, "node-vm.apps.example", 404)
        assert proxy.pid == master and proxy.alive()  # reloaded by its master, not restarted

        # a new handler finds it by its pidfile and reloads it with what the buckets say now
        adopter = Haproxy(directory, netns, tmp_path / "haproxy.log")
        assert await asyncio.to_thread(adopter.adopt) and adopter.pid == master
        await store.bucket(subjects.BUCKET_ENDPOINTS, Endpoints).put("web", Endpoints(name="web"))
        await heard(router.endpoints, "web", lambda ends: not ends.subsets)
        await NodeRouter(store, adopter, address=IPv4Address(NODE), port=8080).sync()
        await until(netns, "moved.apps.example", 503)  # no endpoint left: HAProxy says so at once

        await NodeRouter(store, adopter, address=IPv4Address(NODE), port=8080).stop()
        assert not processes.alive(master) and not (directory / "haproxy.pid").exists()
        assert not Haproxy(directory, netns, tmp_path / "x.log").adopt()
    finally:
        await router.stop()


async def test_a_refused_config_leaves_the_running_one(store: Store, tmp_path: Path) -> None:
    class Refusing(Haproxy):
        def check(self, config: Path) -> str | None:
            return "[ALERT] refused"

    proxy = Refusing(tmp_path, None, tmp_path / "log")
    (tmp_path / "haproxy.cfg").write_text("previous\n")
    with pytest.raises(RuntimeError, match="refused"):
        await NodeRouter(store, proxy, address=None, port=8080).sync()
    assert (tmp_path / "haproxy.cfg").read_text() == "previous\n" and proxy.pid is None


async def call(store: Store, kind: str, verb: str, body: Any) -> Any:
    reply = await store.nc.request(subjects.api(kind, verb), json.dumps(body).encode(), timeout=10)
    return json.loads(reply.data)


async def test_routes_and_ingresses_through_the_api(api: Store) -> None:
    route = yaml.safe_load((REPO / "examples" / "route-testvm.yaml").read_text())
    made = (await call(api, "route", "apply", route))["item"]
    assert made["host"] == "testvm.apps.example" and made["backends"] == [{"service": "testvm-http", "targetPort": 80}]
    again = (await call(api, "route", "apply", route))["item"]
    assert again["uid"] == made["uid"]  # replaced: the same object
    tls = {**route, "spec": {**route["spec"], "tls": {"termination": "edge"}}}
    assert (await call(api, "route", "apply", tls))["error"]["field"] == "spec.tls"
    assert (await call(api, "route", "get", {"name": "testvm"}))["item"]["host"] == "testvm.apps.example"
    assert (await call(api, "route", "get", {"name": "../x"}))["error"]["code"] == "Invalid"
    assert (await call(api, "route", "list", {"surprise": 1}))["error"]["code"] == "BadRequest"
    ingress = yaml.safe_load((REPO / "examples" / "ingress-testvm.yaml").read_text())
    assert (await call(api, "ingress", "apply", ingress))["item"]["rules"][0]["host"] == "testvm-ingress.apps.example"
    assert [i["name"] for i in (await call(api, "ingress", "list", {}))["items"]] == ["testvm"]
    assert (await call(api, "ingress", "delete", {"name": "testvm"}))["message"] == "ingress/testvm deleted"
    assert (await call(api, "ingress", "delete", {"name": "testvm"}))["error"]["code"] == "NotFound"
    assert (await call(api, "route", "delete", {"name": "testvm"}))["message"] == "route/testvm deleted"
    assert (await call(api, "route", "list", {}))["items"] == []


async def test_a_hostile_route_written_by_hand_is_set_aside_not_served(store: Store, tmp_path: Path) -> None:
    class Recording(Haproxy):
        def check(self, config: Path) -> str | None:
            return None

        def start(self) -> None:
            self.started = True

    raw = await store.js.key_value(subjects.BUCKET_ROUTES)
    await raw.put("evil", json.dumps({"name": "evil", "uid": "u", "createdAt": 0, "host": "a.example\n  bind *:22",
                                      "backends": [{"service": "web"}]}).encode())
    await store.bucket(subjects.BUCKET_ROUTES, Route).put("web", Route(
        name="web", uid="u", created_at=0.0, host="web.example", backends=[Backend(service="web")]))
    proxy = Recording(tmp_path, None, tmp_path / "log")
    await NodeRouter(store, proxy, address=None, port=8080).sync()
    config = (tmp_path / "haproxy.cfg").read_text()
    assert proxy.started and "-i web.example" in config and "a.example" not in config and ":22" not in config
