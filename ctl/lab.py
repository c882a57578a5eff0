"""``virtbus lab up|down|status``: a whole cluster on this one machine.

nats-server (JetStream, file storage), two schedulers (one leads), N handler nodes. Each node's data plane is
a network namespace the lab creates, joined to the others by a bridge in a lab namespace; the
root namespace gets nothing but loopback use (the processes reach NATS on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ctl import labovs
from ctl.stdout import say
from proto import subjects
from servicekit import cpugroup, credentials, listenport, natsserver, processes

DEFAULT_STATE_DIR = os.environ.get("VIRTBUS_LAB_DIR", "/var/lib/virtbus/lab")
SCHEDULERS = ("scheduler", "scheduler-b")  # both answer the API; the lease's holder runs the controllers
NODE_NET = "10.99.0"  # the lab's node network, only inside the lab's namespaces
PROVIDER_BRIDGE = "multus-bridge"  # each node's host bridge onto the provider segment (the seed's name)
OUTSIDE_ADDRESSES = ("192.168.100.1/24", "192.168.200.1/24")  # the outside test host: the gateway of both
OUTSIDE_NODE_NET_ADDRESS = f"{NODE_NET}.254/24"  # and a client on the node network, for node ports
PROVIDER_NETWORK = {"apiVersion": "virtbus/v1", "kind": "Network",  # floating IPs come from here
                    "spec": {"name": "provider", "bridge": PROVIDER_BRIDGE, "subnet": "192.168.200.0/24"}}


@dataclass
class LabConfig:
    state_dir: str
    prefix: str
    port: int
    nodes: list[str] = field(default_factory=list)
    probe_kernel: str | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)  # node -> /metrics port on 127.0.0.1

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def lab_netns(self) -> str:
        return f"{self.prefix}-lab"

    def node_netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def outside_netns(self) -> str:
        return f"{self.prefix}-outside"

    @property
    def root(self) -> Path:
        return Path(self.state_dir)

    @property
    def creds_dir(self) -> Path:
        return self.root / "creds"

    def creds(self, user: str) -> str:
        """The seed file of a lab user: admin, viewer, control, node-<node>."""
        return str(credentials.seed_path(self.creds_dir, user))

    @property
    def nats_config(self) -> Path:
        return self.root / "nats.conf"

    def pidfile(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "lab.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: str) -> LabConfig | None:
        try:
            return cls(**json.loads((Path(state_dir) / "lab.json").read_text()))
        except FileNotFoundError:
            return None


# --- processes ----------------------------------------------------------------------------------
def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _running(cfg: LabConfig, name: str) -> int | None:
    pid = _read_pid(cfg.pidfile(name))
    return pid if pid is not None and processes.alive(pid) else None


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nats-server did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


# --- namespaces ---------------------------------------------------------------------------------
def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 and "File exists" not in done.stderr and "already assigned" not in done.stderr:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


def _netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def _make_networks(cfg: LabConfig) -> dict[str, str]:
    """The lab bridge and each node's namespace with its address on it; returns node -> address."""
    lab = cfg.lab_netns
    if not _netns_exists(lab):
        _ip("netns", "add", lab)
    _ip("link", "set", "lo", "up", netns=lab)
    for bridge in ("br0", "provider0"):
        _ip("link", "add", bridge, "type", "bridge", netns=lab)
        _ip("link", "set", bridge, "up", netns=lab)
    addresses = {}
    for i, node in enumerate(cfg.nodes, start=1):
        ns = cfg.node_netns(node)
        addresses[node] = f"{NODE_NET}.{10 + i}"
        if not _netns_exists(ns):
            _ip("netns", "add", ns)
        _ip("link", "set", "lo", "up", netns=ns)
        if not Path(f"/run/netns/{ns}").exists():
            raise RuntimeError(f"netns {ns} missing")
        probe = subprocess.run(["ip", "-n", ns, "link", "show", "eth0"], capture_output=True, check=False)
        if probe.returncode != 0:
            # Both ends are created inside the lab's namespaces; the root namespace never holds one.
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"n{i}", "netns", lab,
                netns=lab)
        _ip("addr", "add", f"{addresses[node]}/24", "dev", "eth0", netns=ns)
        _ip("link", "set", "eth0", "up", netns=ns)
        _ip("link", "set", f"n{i}", "master", "br0", netns=lab)
        _ip("link", "set", f"n{i}", "up", netns=lab)
        # the provider segment: node bridge <- prov0 ... p<i> -> provider0 in the lab namespace
        _ip("link", "add", PROVIDER_BRIDGE, "type", "bridge", netns=ns)
        if subprocess.run(["ip", "-n", ns, "link", "show", "prov0"], capture_output=True, check=False).returncode:
            _ip("link", "add", "prov0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", lab, netns=lab)
        _ip("link", "set", "prov0", "master", PROVIDER_BRIDGE, netns=ns)
        for link in ("prov0", PROVIDER_BRIDGE):
            _ip("link", "set", link, "up", netns=ns)
        _ip("link", "set", f"p{i}", "master", "provider0", netns=lab)
        _ip("link", "set", f"p{i}", "up", netns=lab)
    outside = cfg.outside_netns
    if not _netns_exists(outside):
        _ip("netns", "add", outside)
    _ip("link", "set", "lo", "up", netns=outside)
    if subprocess.run(["ip", "-n", outside, "link", "show", "eth0"], capture_output=True, check=False).returncode:
        _ip("link", "add", "eth0", "netns", outside, "type", "veth", "peer", "name", "out0", "netns", lab, netns=lab)
    for address in OUTSIDE_ADDRESSES:
        _ip("addr", "add", address, "dev", "eth0", netns=outside)
    _ip("link", "set", "eth0", "up", netns=outside)
    _ip("link", "set", "out0", "master", "provider0", netns=lab)
    _ip("link", "set", "out0", "up", netns=lab)
    # the outside host also sits on the node network (not the pod network): node ports are for it
    if subprocess.run(["ip", "-n", outside, "link", "show", "eth1"], capture_output=True, check=False).returncode:
        _ip("link", "add", "eth1", "netns", outside, "type", "veth", "peer", "name", "out1", "netns", lab, netns=lab)
    _ip("addr", "add", OUTSIDE_NODE_NET_ADDRESS, "dev", "eth1", netns=outside)
    _ip("link", "set", "eth1", "up", netns=outside)
    _ip("link", "set", "out1", "master", "br0", netns=lab)
    _ip("link", "set", "out1", "up", netns=lab)
    return addresses


def _our_netns(cfg: LabConfig) -> list[str]:
    try:
        names = [line.split()[0] for line in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.splitlines() if line]
    except subprocess.CalledProcessError:
        return []
    return [n for n in names if n.startswith(f"{cfg.prefix}-")]


# --- commands -----------------------------------------------------------------------------------
def up(cfg: LabConfig) -> None:
    natsserver.executable()  # raises, saying what to run, before anything is made
    say(f"lab: state in {cfg.root}, NATS at {cfg.url}")
    cfg.addresses = _make_networks(cfg)
    labovs.make_segment(cfg)
    # outside the ephemeral range: an outgoing connection taking one before its service binds it
    # kept a handler from starting (CI, 2026-12-04)
    unchosen = [name for name in [*SCHEDULERS, *cfg.nodes] if name not in cfg.metrics]
    cfg.metrics.update(zip(unchosen, listenport.unused_ports(len(unchosen)), strict=True))
    cfg.save()
    _write_auth(cfg)
    say(f"lab: node namespaces {', '.join(cfg.node_netns(n) for n in cfg.nodes)} on bridge br0 in {cfg.lab_netns}")
    if _running(cfg, "labd") is None:
        (cfg.root / "logs").mkdir(parents=True, exist_ok=True)
        with open(cfg.root / "logs" / "labd.log", "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "ctl.labd", "--state-dir", str(cfg.root)],
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
        cfg.pidfile("labd").parent.mkdir(parents=True, exist_ok=True)
        cfg.pidfile("labd").write_text(f"{proc.pid}\n")
        _wait_port(cfg.port, 15)
        say("lab: nats-server up; scheduler and handlers starting")
    say(f"lab: waiting for {len(cfg.nodes)} nodes to be Ready")
    _wait_nodes(cfg, timeout=90)
    _define_provider_network(cfg)


def _write_auth(cfg: LabConfig) -> None:
    """An nkey per role and node (kept across `lab up`s), and a server config that admits only
    them; no anonymous client gets in. The one-machine lab listens on loopback only: no TLS."""
    users = credentials.users_for(cfg.nodes)
    keys = credentials.ensure_seeds(cfg.creds_dir, users)
    credentials.write_server_config(cfg.nats_config, credentials.server_config(
        users, keys, host="127.0.0.1", port=cfg.port, store_dir=str(cfg.root / "nats"),
        server_name=f"{cfg.prefix}-nats"))
    say(f"lab: credentials in {cfg.creds_dir} (admin.nk for the CLI, viewer.nk read only)")


def _define_provider_network(cfg: LabConfig) -> None:
    import asyncio

    from ctl.client import ApiClient
    from proto.api import NetworkReply

    async def define() -> None:
        api = await ApiClient.connect(cfg.url, cfg.creds("admin"))
        try:
            await api.call("network", "apply", json.dumps(PROVIDER_NETWORK).encode(), NetworkReply)
        finally:
            await api.close()

    asyncio.run(define())
    say("lab: network provider (192.168.200.0/24, for floating IPs) on the provider segment")


def _wait_nodes(cfg: LabConfig, timeout: float) -> None:
    import asyncio

    from ctl.client import ApiClient
    from proto.api import NodeList
    from proto.errors import ApiError

    async def poll() -> None:
        start = time.monotonic()
        api = await ApiClient.connect(cfg.url, cfg.creds("admin"))
        try:
            last = ""
            while True:
                try:
                    nodes = (await api.call("node", "list", {}, NodeList)).items
                    ready = sorted(n.node.name for n in nodes if n.ready)
                    state = f"{len(ready)}/{len(cfg.nodes)} nodes Ready"
                except ApiError as exc:
                    ready, state = [], str(exc)
                if state != last:
                    say(f"  {state} ({time.monotonic() - start:.1f}s)")
                    last = state
                if set(cfg.nodes) <= set(ready):
                    return
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"nodes not ready after {timeout:.0f}s: {state}; see {cfg.root}/logs")
                await asyncio.sleep(0.5)
        finally:
            await api.close()

    asyncio.run(poll())


def lab_cpu_groups(cfg: LabConfig) -> list[Path]:
    """Where the lab's nodes' CPU groups are (or would be), as their handlers name them."""
    found = (cpugroup.locate(cpugroup.group_name(cfg.prefix, node, kind)) for node in cfg.addresses
             for kind in cpugroup.SHARES)
    return [group for group in found if group is not None]


def down(cfg: LabConfig) -> None:
    if (pid := _running(cfg, "labd")) is not None:
        say("lab: stopping VMs, handlers, schedulers and nats-server")
        processes.end([pid], 150)
    for ns in _our_netns(cfg):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
        processes.end([int(p) for p in pids.split()], 5)  # only processes inside the lab's own namespaces
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
    for group in lab_cpu_groups(cfg):  # labd removes them; this is for a lab whose labd is gone
        cpugroup.remove(group)
    shutil.rmtree(cfg.root, ignore_errors=True)
    say(f"lab: down; removed {cfg.root}")


def status(cfg: LabConfig) -> int:
    say(f"lab {cfg.prefix}: state {cfg.root}, NATS {cfg.url}")
    rows = []
    for name in ["labd", "nats-server", *SCHEDULERS, *(f"handler-{n}" for n in cfg.nodes),
                 *(("dnsmasq-provider", "dnsmasq-ovs") if shutil.which("dnsmasq") else ())]:
        pid = _running(cfg, name)
        rows.append(f"  {name:<20} {'running, pid ' + str(pid) if pid else 'NOT RUNNING'}")
    say("\n".join(rows))
    say("  namespaces: " + " ".join(_our_netns(cfg)))
    # nkey seeds: the NATS CLI takes them with --nkey, nats-py with nkeys_seed=
    say(f"  credentials: admin {cfg.creds('admin')} (the CLI's default), viewer {cfg.creds('viewer')}")
    for node, port in sorted(cfg.metrics.items()):
        say(f"  metrics of {node}: http://127.0.0.1:{port}/metrics")  # what Prometheus scrapes
    return 0 if all("NOT" not in r for r in rows) else 1


def lab_exec(cfg: LabConfig, node: str, command: list[str]) -> int:
    """Run a command inside a lab node's namespace, as `docker exec` does for kind."""
    if node != "outside" and node not in cfg.nodes:
        print(f"error: no node {node!r} in this lab (nodes: {', '.join(cfg.nodes)}, or outside)", file=sys.stderr)
        return 2
    if not command:
        print("error: give a command after --", file=sys.stderr)
        return 2
    netns = cfg.outside_netns if node == "outside" else cfg.node_netns(node)
    return subprocess.run(["ip", "netns", "exec", netns, *command], check=False).returncode


def lab_targets(cfg: LabConfig) -> list[str]:
    """Every /metrics of this lab (the list `lab status` prints), as Prometheus targets."""
    return [f"127.0.0.1:{port}" for _, port in sorted(cfg.metrics.items())]


def compose_targets(compose_file: Path) -> list[str]:
    """Every /metrics of the compose lab: its list ``x-virtbus-metrics`` (service -> port), each at
    the service's fixed address on the network ``lab``, else by its name."""
    import yaml

    doc = yaml.safe_load(compose_file.read_text())
    targets = []
    for service, port in sorted(doc.get("x-virtbus-metrics", {}).items()):
        spec = doc["services"][service]
        networks = spec.get("networks", {})
        lab = networks.get("lab") if isinstance(networks, dict) else None
        host = (lab or {}).get("ipv4_address", service)
        targets.append(f"{host}:{int(port)}")
    return targets


def prometheus_config(targets: list[str], interval: str = "5s") -> str:
    """A Prometheus config scraping the given /metrics targets."""
    listed = ", ".join(f"'{t}'" for t in targets)
    return (f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            f"scrape_configs:\n  - job_name: virtbus\n    static_configs:\n      - targets: [{listed}]\n")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser("lab", help="a whole cluster on this machine")
    lsub = lab.add_subparsers(dest="lab_command", required=True)
    u = lsub.add_parser("up")
    u.add_argument("--nodes", type=int, default=2)
    u.add_argument("--port", type=int, default=4222)
    u.add_argument("--prefix", default="vblab", help="prefix of the lab's namespace names")
    u.add_argument("--probe-kernel", default=None, help="a kernel the handlers boot to learn if KVM works")
    e = lsub.add_parser("exec", help="run a command in a lab node's (or the outside host's) network namespace")
    e.add_argument("node")
    e.add_argument("cmd", nargs=argparse.REMAINDER)
    pc = lsub.add_parser("prometheus-config", help="a Prometheus config that scrapes the lab")
    pc.add_argument("--interval", default="5s")
    pc.add_argument("--compose", default=None, metavar="FILE",
                    help="for the compose lab of FILE (compose/compose.yml) instead of this machine's lab")
    for p in (u, lsub.add_parser("down"), lsub.add_parser("status"), e, pc):
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)


def run(args: argparse.Namespace) -> int:
    if args.lab_command == "prometheus-config" and args.compose:
        print(prometheus_config(compose_targets(Path(args.compose)), args.interval), end="")
        return 0
    existing = LabConfig.load(args.state_dir)
    if args.lab_command == "up":
        if not 1 <= args.nodes <= 16:
            raise SystemExit("error: --nodes must be between 1 and 16")
        subjects.token(args.prefix)
        cfg = existing or LabConfig(args.state_dir, args.prefix, args.port)
        cfg.nodes = [f"node{i}" for i in range(1, max(args.nodes, len(cfg.nodes)) + 1)]
        cfg.probe_kernel = args.probe_kernel or cfg.probe_kernel
        try:
            up(cfg)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        say("lab: up")
        return 0
    if existing is None:
        say(f"lab: no lab in {args.state_dir}")
        return 0 if args.lab_command == "down" else 1
    if args.lab_command == "down":
        down(existing)
        return 0
    if args.lab_command == "prometheus-config":
        print(prometheus_config(lab_targets(existing), args.interval), end="")
        return 0
    if args.lab_command == "exec":
        return lab_exec(existing, args.node, args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
    return status(existing)
