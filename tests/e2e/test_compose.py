"""The compose lab (compose/lab.sh): the same services as containers of one image, on a 3-server NATS
cluster, with Prometheus configured from the compose file's list of /metrics. The seed VM boots there
and is reached across nodes; guests have no way out."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import nats
import pytest

from proto import subjects
from tests.conftest import EXAMPLES, REPO, free_port, try_connect
from tests.e2e.conftest import guest_disk

pytestmark = pytest.mark.e2e


@dataclass
class ComposeLab:
    project: str
    nats_url: str
    prometheus: str
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ctl", "--server", self.nats_url, *args], capture_output=True,
                              text=True, timeout=400, cwd=REPO, env=self.env)
        assert done.returncode == 0, f"virtbus {' '.join(args)}:\n{done.stdout}\n{done.stderr}\n{self.logs()}"
        return done.stdout

    def containers(self) -> list[str]:
        out = subprocess.run(["podman", "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
                              "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout
        return sorted(out.split())

    def exec(self, service: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", "exec", f"{self.project}_{service}_1", *cmd], capture_output=True, text=True,
                              timeout=60, env=self.env)

    def logs(self) -> str:
        out = []
        for name in self.containers():
            tail = subprocess.run(["podman", "logs", "--tail", "20", name], capture_output=True, text=True).stdout
            out.append(f"--- {name}\n{tail}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def compose_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeLab]:
    project = f"vbc{secrets.token_hex(3)}"
    nats_port, prometheus_port = free_port(), free_port()
    state = tmp_path_factory.mktemp("compose")
    env = {**os.environ, "VIRTBUS_COMPOSE_PROJECT": project, "VIRTBUS_NATS_PORT": str(nats_port),
           "VIRTBUS_PROMETHEUS_PORT": str(prometheus_port), "VIRTBUS_COMPOSE_STATE": str(state),
           "CONTAINERS_CONF": str(REPO / "compose" / "containers.conf"),
           # what lab.sh generates: the CLI authenticates as admin and checks the servers against the lab's CA
           "NATS_CREDS": str(state / "creds" / "admin.nk"), "NATS_CA": str(state / "tls" / "ca.pem")}
    lab = ComposeLab(project, f"tls://127.0.0.1:{nats_port}", f"http://127.0.0.1:{prometheus_port}", env)
    try:
        up = subprocess.run(["bash", "compose/lab.sh", "up"], capture_output=True, text=True, timeout=900, cwd=REPO,
                            env=env)
        assert up.returncode == 0, f"compose/lab.sh up:\n{up.stdout}\n{up.stderr[-3000:]}\n{lab.logs()}"
        yield lab
    finally:
        subprocess.run(["bash", "compose/lab.sh", "down"], capture_output=True, timeout=300, cwd=REPO, env=env)
        left = lab.containers()
        networks = subprocess.run(["podman", "network", "ls", "--format", "{{.Name}}"], capture_output=True,
                                  text=True, env=env).stdout.split()
        assert left == [] and not [n for n in networks if n.startswith(project)], (left, networks)


def promql(lab: ComposeLab, query: str) -> list[tuple[dict[str, str], float]]:
    url = f"{lab.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        return [(s["metric"], float(s["value"][1])) for s in json.loads(r.read())["data"]["result"]]


def replicas_of_state(lab: ComposeLab) -> dict[str, int]:
    async def ask() -> dict[str, int]:
        nc = await nats.connect(lab.nats_url, nkeys_seed=lab.env["NATS_CREDS"],
                                tls=ssl.create_default_context(cafile=lab.env["NATS_CA"]))
        try:
            js = nc.jetstream()
            out = {}
            kv = [subjects.kv_stream(b) for b in (subjects.BUCKET_VMIS, subjects.BUCKET_VMS)]
            for stream in (*kv, subjects.STREAM_CONSOLE):
                info = await js.stream_info(stream)
                out[stream] = info.config.num_replicas or 0
            return out
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_seed_vm_in_the_compose_lab(compose_lab: ComposeLab) -> None:
    lab = compose_lab
    assert len(lab.containers()) == 8  # nats1-3, two schedulers, node1-2, prometheus
    lab.cli("image", "import", "quay.io/kubevirt/cirros-container-disk-demo", "--file", guest_disk())
    lab.cli("apply", "-f", str(EXAMPLES / "testvm-masquerade.yaml"))
    lab.cli("start", "testvm", "--wait", "--timeout", "300")
    assert "VIRTBUS-GUEST-IP 10.0.2.2" in lab.cli("console", "testvm", "--log", "--until", "VIRTBUS-GUEST-IP",
                                                  "--timeout", "120")
    vmi = json.loads(lab.cli("get", "vmis", "testvm", "-o", "json"))
    node, pod_ip = vmi["status"]["nodeName"], vmi["status"]["interfaces"][0]["ipAddress"]
    other = "node2" if node == "node1" else "node1"

    # the pod network spans the node containers: another node reaches the guest by its pod IP
    deadline = time.monotonic() + 60
    while "hostname: testvm" not in (page := lab.exec(other, "curl", "-s", "-m", "3", f"http://{pod_ip}/").stdout):
        assert time.monotonic() < deadline, f"{pod_ip} from {other}: {page!r}\n{lab.logs()}"
        time.sleep(1)

    # the state is kept by all three NATS servers
    assert set(replicas_of_state(lab).values()) == {3}

    # Prometheus, configured from compose.yml's list, scrapes every target and sees the VM
    deadline = time.monotonic() + 60
    while True:
        up = promql(lab, "up")
        running = promql(lab, 'kubevirt_vmi_phase_count{phase="running"}')
        if len(up) == 4 and all(v == 1 for _, v in up) and sum(v for _, v in running) == 1:
            break
        assert time.monotonic() < deadline, (up, running)
        time.sleep(1)
    assert {m["node"] for m, v in running if v == 1} == {node}

    # no route out of the lab network: a guest's packets have nowhere to go but the lab
    for service in ("node1", "node2"):
        routes = lab.exec(service, "ip", "route").stdout
        assert routes and "default" not in routes, routes

    # Nobody in without a key, nobody in without TLS; routes between the servers are TLS too
    nats_url = lab.nats_url
    assert "authorization violation" in try_connect(nats_url, env=lab.env).lower()
    assert try_connect(nats_url, lab.env["NATS_CREDS"], env=lab.env).strip() == "connected"
    untrusted = {k: v for k, v in lab.env.items() if k != "NATS_CA"}  # the system's CAs: not the lab's
    assert try_connect(nats_url, lab.env["NATS_CREDS"], env=untrusted).startswith("refused")
    # nats1's ports as another container sees them: the client port says TLS is required; the route
    # port speaks TLS from the first byte (no plaintext INFO), and the 3 servers formed their cluster
    # over it (the state has 3 replicas, above)
    probe = ("import socket, sys; s = socket.create_connection(('10.98.0.2', int(sys.argv[1])), 5); "
             "s.settimeout(3); print(repr(s.recv(4096)))")
    info = lab.exec("node1", "python3", "-c", probe, "4222").stdout
    assert info.startswith("b'INFO ") and '"tls_required":true' in info, info
    route = lab.exec("node1", "python3", "-c", probe, "6222")
    assert "INFO" not in route.stdout and route.returncode in (0, 1), (route.stdout, route.stderr)

    # live migration between the node containers (no file system shared): the guest moves to the other
    # node, and is reached there at its new pod IP from the node it left
    said = lab.cli("migrate", "testvm", "--wait", "--timeout", "180")
    assert f"Succeeded to {other}" in said, said
    moved = json.loads(lab.cli("get", "vmis", "testvm", "-o", "json"))
    assert (moved["metadata"]["uid"], moved["status"]["nodeName"]) == (vmi["metadata"]["uid"], other)
    new_ip = moved["status"]["interfaces"][0]["ipAddress"]
    deadline = time.monotonic() + 60
    while "hostname: testvm" not in (page := lab.exec(node, "curl", "-s", "-m", "3", f"http://{new_ip}/").stdout):
        assert time.monotonic() < deadline, f"{new_ip} from {node}: {page!r}\n{lab.logs()}"
        time.sleep(1)
    assert "testvm" not in lab.exec(node, "ip", "netns", "list").stdout  # nothing of it left where it was

    lab.cli("delete", "testvm", "--wait", "--timeout", "120")
    assert "testvm" not in lab.exec(other, "ip", "netns", "list").stdout  # its pod namespace is gone
