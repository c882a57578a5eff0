"""``python -m handler --node NAME``: the agent of one node."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import structlog

from handler import guestfence, nodeinfo, nodevmis, warmmemory
from handler.agent import Agent
from handler.kvmprobe import cached_kvm_runs_guests
from handler.launchers import Launchers, NodePaths
from handler.metrics import NodeMetrics, WarmMemoryCollector
from handler.podnet import PodNetwork
from handler.residentfiles import DEFAULT_BOUND, MlockedFiles, ResidentFiles
from handler.router import Haproxy, NodeRouter, haproxy_installed
from handler.warmmemory import AnonymousMemory, WarmMemory
from proto import netcheck, subjects
from proto.errors import ApiError
from proto.labels import check_labels
from proto.nodeapi import Registration
from proto.quantity import InvalidQuantity, parse_bytes
from proto.state import Node
from servicekit import collector, cpugroup, logs, ovs, vlanports
from servicekit.endpoints import Endpoint, serve
from servicekit.metricsserver import metrics_address, serve_metrics, stop_serving
from servicekit.nodeclient import NodeApiClient
from servicekit.paths import host_cache
from servicekit.store import Store

# The longest a starting node waits for its probe of QEMU's capabilities before it registers (a few
# seconds; 8 s beside a CI run): a probe that hangs holds it back no longer than this.
WARM_WAIT_S = 30.0
# the provider bridge of the lab and of the seed "Next Gen part 2"
DEFAULT_ALLOWED_BRIDGES = ("multus-bridge",)


async def probe_kvm(args: argparse.Namespace) -> tuple[bool, str]:
    """(KVM runs guests here, why): the probe's verdict, cached for this host's boot."""
    if args.no_kvm:
        return False, "disabled by --no-kvm"
    kernel = Path(args.probe_kernel) if args.probe_kernel else None
    return await asyncio.to_thread(cached_kvm_runs_guests, kernel, host_cache() / "kvm-probe.json")


async def run(args: argparse.Namespace) -> None:
    log = logs.configure("handler", node=args.node)
    collector.pace_for_caches()
    # The KVM probe runs beside the connect, the fork server and the capabilities' probe: the node
    # registers (and so launches) only once both have ended, and then with the verdict.
    probing = asyncio.create_task(probe_kvm(args))
    resident = ResidentFiles(MlockedFiles(), skip=(Path(args.state_dir),),
                             memory=host_cache() / "launch-files.json") if args.keep_launch_files else None
    # what the last handler here kept in memory, locked again (read from disk if it was paged out) while
    # the node starts: its first launches find it there
    recalling = asyncio.create_task(asyncio.to_thread(resident.recall)) if resident is not None else None
    store = await Store.connect(args.server, f"virtbus-handler-{args.node}", creds=args.creds,
                                inbox=subjects.inbox_prefix("node", args.node), create=False)
    nodeapi = NodeApiClient(store.nc, args.node)
    state_dir = Path(args.state_dir) / "nodes" / args.node
    launchers = Launchers(NodePaths(state_dir, Path(args.state_dir) / "logs"), node=args.node,
                          nats_url=args.server, netns_prefix=args.netns_prefix, kvm=False,  # the probe sets it
                          node_netns=args.netns, creds=args.creds, host_disk_dirs=tuple(args.host_disk_dir),
                          ovs_db=args.ovs_db, fork=args.fork_launchers, cpu_groups=await asyncio.to_thread(
                              make_cpu_groups, args.netns_prefix, args.node))
    log.info("CPU groups", **{kind: str(path) for kind, path in launchers.cpu_groups.items()})
    launchers.copies_republished = nodevmis.republishes(store, args.node)
    await asyncio.to_thread(launchers.start_fork_server)  # importing while the rest starts
    await asyncio.to_thread(launchers.warm_caps)  # QEMU's capabilities probed, once per node start
    # Registered (and so Ready, and chosen for VMs) only once the probe has ended, as KubeVirt marks a
    # node schedulable once its node labeller has read QEMU's capabilities: a node still probing would
    # hold its first launches, and being the emptiest it is the one a fresh cluster's binder fills first.
    probed = await launchers.wait_warm(WARM_WAIT_S)
    log.info("QEMU capabilities probed" if probed else "QEMU capabilities probe still running; registering")
    kvm, why = await probing
    log.info("kvm probe", kvm=kvm, detail=why)
    launchers.kvm = kvm
    if recalling is not None:
        await recalling  # before the node is Ready: its first launches find the files in memory
    # The control plane writes the node's record and picks its pod CIDR; this node only heartbeats.
    node = await nodeapi.register(Registration(
        cpus=nodeinfo.cpus(args.cpus), memory=nodeinfo.guest_memory(args.memory), kvm=kvm,
        labels=node_labels(args.node, args.label), address=args.address,
        allowed_bridges=sorted(set(args.allowed_bridge or DEFAULT_ALLOWED_BRIDGES)),
        ovs_bridges=await asyncio.to_thread(ovs.bridges_or_none, args.ovs_db),
        vlan_access_ports=vlan_ports_here(log),
        free_disk=nodeinfo.free_disk(Path(args.state_dir))))
    podnet = PodNetwork(store, args.node, args.netns, IPv4Network(node.pod_cidr or ""))
    await asyncio.to_thread(podnet.set_up_bridge)
    management = args.management_network or await asyncio.to_thread(
        guestfence.node_network, args.netns, args.address, podnet.netlink)
    if management is None:
        log.warning("no management network (give --address or --management-network): guests are kept off "
                    "this node and the other nodes' addresses only")
    warm = warm_memory(args.warm_memory)
    log.info("warm memory", size=warm.size if warm is not None else 0, asked=args.warm_memory)
    agent = Agent(store, node, launchers, podnet, nodeapi, management=management,
                  image_cache_bound=args.image_cache_max, ovs_db=args.ovs_db,
                  parallel_launches=args.parallel_launches,
                  guests_cpu_group=launchers.cpu_groups.get(cpugroup.GUESTS),
                  resident_files=resident, warm_memory=warm)
    await agent.start()
    router = None
    if args.router_port and haproxy_installed():  # Routes and Ingresses on the node's address
        router = NodeRouter(store, Haproxy(state_dir / "router", args.netns, Path(args.state_dir) / "logs" /
                                           f"haproxy-{args.node}.log"),
                            address=IPv4Address(args.address) if args.address else None, port=args.router_port)
        router_task = asyncio.create_task(router.run())
    elif args.router_port:
        log.warning("haproxy is not installed: Routes and Ingresses are not served on this node")
    async def info(body: bytes) -> Node:
        current = await store.nodes.get(args.node)
        return current.value if current else node

    service = await serve(store.nc, name="virtbus-handler", version="0.1.0", queue=f"handler-{args.node}",
                          description=f"virtbus node agent of {args.node}",
                          endpoints=[Endpoint("node-info", subjects.node_info(args.node), info)])
    metrics = NodeMetrics(store, args.node)
    if warm is not None:
        metrics.registry.register(WarmMemoryCollector(args.node, warm))
    metrics_task = asyncio.create_task(metrics.run())
    # in the background: a held port delays the node's scrape, never the node itself
    serving = (asyncio.create_task(serve_metrics(args.metrics_address, metrics.registry, log))
               if args.metrics_address else None)
    log.info("handler started", cpus=node.cpus, memory=node.memory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    # Launchers keep running: a new handler adopts them.
    log.info("handler stopping")
    metrics_task.cancel()
    await stop_serving(serving)
    await service.stop()
    await agent.stop()
    await asyncio.to_thread(launchers.stop_fork_server)  # what it forked runs on
    for group in launchers.cpu_groups.values():  # gone once nothing is left in it; a running guest keeps it
        await asyncio.to_thread(cpugroup.remove, group)
    if router is not None:  # its HAProxy goes with it (only the pid it started or adopted)
        router_task.cancel()
        await router.stop()
    await store.close()


def vlan_ports_here(log: structlog.stdlib.BoundLogger) -> bool:
    """Whether bridge networks on a VLAN can run here (servicekit.vlanports), said in the log either way."""
    why_not = vlanports.available()
    if why_not is None:
        log.info("VLAN access ports on bridges available")
        return True
    log.warning("no VLAN access ports on bridges here: VMs on a bridge network with a vlan go elsewhere",
                reason=why_not)
    return False


def _bridge(name: str) -> str:
    try:
        netcheck.ifname(name, "--allowed-bridge")
    except ApiError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if name == netcheck.POD_BRIDGE:
        raise argparse.ArgumentTypeError(f"{name} is the pod network's bridge")
    return name


def _router_port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0: no proxy)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _quantity(text: str) -> int:
    try:
        return parse_bytes(text)
    except InvalidQuantity as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _warm_memory(text: str) -> int | None:
    try:
        return warmmemory.parse(text, parse_bytes, warmmemory.read_meminfo().total)
    except warmmemory.WarmMemoryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def warm_memory(asked: int | None, sysfs: Path = Path("/sys")) -> WarmMemory | None:
    """The reserve --warm-memory asks for (None: auto), or None when that is none."""
    size = warmmemory.auto_size(warmmemory.read_meminfo().total, warmmemory.reclaiming_host(sysfs)) \
        if asked is None else asked
    return WarmMemory(AnonymousMemory(size), size) if size > 0 else None


def _host_disk_dir(text: str) -> str:
    if not os.path.isabs(text) or os.path.normpath(text) != text or text == "/":
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute, normalised directory (nor /)")
    return text


def node_labels(node: str, given: list[str]) -> dict[str, str]:
    """Like kubelet's: a KubeVirt manifest pins a VM with ``nodeSelector: {kubernetes.io/hostname: N}``."""
    labels = {"kubernetes.io/hostname": node, **dict(kv.split("=", 1) for kv in given)}
    check_labels(labels, "--label")  # as the node record's readers will
    return labels


def make_cpu_groups(netns_prefix: str, node: str) -> dict[str, Path]:
    """The node's guests' and launches' CPU groups (servicekit.cpugroup), those this host can have."""
    made = {kind: cpugroup.make(cpugroup.group_name(netns_prefix, node, kind), shares)
            for kind, shares in cpugroup.SHARES.items()}
    return {kind: path for kind, path in made.items() if path is not None}


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handler")
    parser.add_argument("--node", required=True, type=subjects.token)
    parser.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--creds", default=os.environ.get("NATS_CREDS"),
                        help="this node's nkey seed file (env NATS_CREDS); its launchers use it too")
    parser.add_argument("--state-dir", default="/var/lib/virtbus")
    parser.add_argument("--netns-prefix", default="vb", type=subjects.token)
    parser.add_argument("--address", default=None, help="the node's address on the node network")
    parser.add_argument("--management-network", default=None, type=IPv4Network,
                        help="the node network guests may not reach, node ports excepted "
                             "(default: the network of --address on its interface)")
    parser.add_argument("--netns", default=None, help="the node's network namespace (default: this one)")
    parser.add_argument("--memory", default=None, help="memory offered to guests (quantity)")
    parser.add_argument("--cpus", default=None, type=int)
    parser.add_argument("--label", action="append", default=[], help="node label key=value")
    parser.add_argument("--allowed-bridge", action="append", default=[], type=_bridge,
                        help="a host bridge secondary networks may use (repeat; default: "
                             f"{', '.join(DEFAULT_ALLOWED_BRIDGES)}); never the uplink or the pod bridge")
    parser.add_argument("--ovs-db", default=None, metavar="unix:SOCKET",
                        help="this node's Open vSwitch database (ovs NADs use its bridges; default: no OVS)")
    parser.add_argument("--host-disk-dir", action="append", default=[], type=_host_disk_dir,
                        help="a directory hostDisk volumes may be under (repeat; default: none, every "
                             "hostDisk is refused); symlinks are resolved before the check")
    parser.add_argument("--probe-kernel", default=None,
                        help="a Linux kernel to boot under KVM to learn if KVM runs guests (default: /boot)")
    parser.add_argument("--metrics-address", default=None, type=metrics_address, help="HOST:PORT to serve /metrics on")
    parser.add_argument("--router-port", default=80, type=_router_port,
                        help="the port of the node's HTTP proxy serving Routes and Ingresses on --address "
                             "(default 80; 0: none)")
    parser.add_argument("--parallel-launches", type=_positive, default=None, metavar="N",
                        help="instances starting at once on this node, the rest waiting their turn "
                             "(default: one per core, and one more)")
    parser.add_argument("--no-kvm", action="store_true", help="run guests under TCG even if KVM works")
    parser.add_argument("--fork-launchers", action=argparse.BooleanOptionalAction, default=True,
                        help="fork launchers from a pre-imported process (launcher.forkserver) rather than "
                             "start each in a fresh interpreter (default: fork)")
    parser.add_argument("--keep-launch-files", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the pages of QEMU, libvirtd and the launcher that a launch used in memory "
                             f"(mlock, at most {DEFAULT_BOUND // 2**20} MiB), so a launch after a quiet spell "
                             "does not read them from disk again; remembered in $VIRTBUS_CACHE/launch-files.json "
                             "and locked again as the next handler starts (handler.residentfiles; default: keep)")
    parser.add_argument("--warm-memory", type=_warm_memory, default=os.environ.get("VIRTBUS_WARM_MEMORY", "auto"),
                        metavar="auto|0|SIZE",
                        help="memory kept touched while the node is quiet and handed to each launch as it begins "
                             "(80 MiB each), for a machine whose host takes back free memory (virtio-balloon's "
                             "free page reporting), where fresh pages cost the host's fault too; refilled at idle "
                             "priority, given back under memory pressure (handler.warmmemory; env "
                             "VIRTBUS_WARM_MEMORY; default auto: an eighth of the memory, at most 3Gi, on such a "
                             "machine, none elsewhere)")
    parser.add_argument("--image-cache-max", type=_quantity, default=os.environ.get("VIRTBUS_IMAGE_CACHE_MAX", "20Gi"),
                        help="bytes the node's image cache may take before the least recently used unused "
                             "images go (env VIRTBUS_IMAGE_CACHE_MAX; default 20Gi)")
    return parser


def main() -> None:
    asyncio.run(run(main_parser().parse_args()))


if __name__ == "__main__":
    main()
