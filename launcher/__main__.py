"""``python -m launcher``: one VMI's launcher, spawned by its node's handler.

Order matters: the pod network namespace is made and the private mount namespace entered before
any thread exists (unshare(CLONE_NEWNS) refuses a threaded process), then asyncio starts.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import sys
from pathlib import Path

from launcher import memory, namespaces, priority
from launcher.lifecycle import launch_failure
from launcher.reports import REPORT_PATIENCE_S
from launcher.runner import LauncherArgs, Runner
from proto import subjects
from proto.errors import ApiError
from proto.nodeapi import EventNote, StatusReport
from proto.state import Phase
from servicekit import cpugroup, launcherlock, logs
from servicekit.connection import connect_nats
from servicekit.nodeclient import NodeApiClient
from servicekit.store import Store

PR_SET_CHILD_SUBREAPER = 36


async def _main(args: LauncherArgs, url: str, creds: str | None) -> int:
    logs.configure("launcher", vm=args.vmi, vmi=args.vmi, node=args.node, uid=args.uid)
    store = await Store.connect(url, f"virtbus-launcher-{args.node}-{args.vmi}", creds=creds,
                                inbox=subjects.inbox_prefix("node", args.node), create=False,
                                check=False)  # the handler that spawned it saw the buckets
    try:
        return await Runner(args, store).run()
    finally:
        await store.close()


async def _report_failure(args: LauncherArgs, url: str, creds: str | None, reason: str) -> int:
    logs.configure("launcher", vm=args.vmi, vmi=args.vmi, node=args.node, uid=args.uid)
    nc = await connect_nats(url, f"virtbus-launcher-{args.node}-{args.vmi}", creds=creds,
                            inbox=subjects.inbox_prefix("node", args.node))
    try:
        await NodeApiClient(nc, args.node).report(StatusReport(
            vmi=args.vmi, uid=args.uid, phase=Phase.FAILED, reason=reason,
            event=EventNote(reason="Failed", message=reason, warning=True)), patience=REPORT_PATIENCE_S)
    except ApiError as exc:  # gone or no longer ours: nothing to say it to
        print(f"launcher: failure not reported: {exc.message}", file=sys.stderr)
    finally:
        await nc.close()
    return 1


def main(argv: list[str] | None = None) -> None:
    """argv: from launcher.forkserver, which forks launchers rather than start them afresh."""
    p = argparse.ArgumentParser(prog="python -m launcher")
    p.add_argument("--vmi", required=True, type=subjects.token)
    p.add_argument("--uid", required=True, type=subjects.token)
    p.add_argument("--node", required=True, type=subjects.token)
    p.add_argument("--node-dir", required=True)
    p.add_argument("--pod-netns", required=True)
    p.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--creds", default=os.environ.get("NATS_CREDS"), help="the node's nkey seed file")
    p.add_argument("--kvm", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--node-netns", default=None)
    p.add_argument("--pod-ip", default=None, help="the pod IP with its prefix")
    p.add_argument("--pod-gateway", default=None)
    p.add_argument("--secondary", action="append", default=[],
                   help="interface=node-bridge=address/prefix[=type=vlan] (no address: layer 2)")
    p.add_argument("--ovs-db", default=None, help="the node's Open vSwitch database, for ovs NICs")
    p.add_argument("--host-disk-dir", action="append", default=[], help="where hostDisks may be (repeat)")
    p.add_argument("--guest-cpu-group", default=None, help="the node's guests' CPU group (a cgroup directory)")
    p.add_argument("--launch-cpu-group", default=None, help="the node's launches' CPU group (a cgroup directory)")
    p.add_argument("--migration-target", default=None, type=subjects.token,
                   help="this launcher is the target of the VMI's live migration of this uid")
    p.add_argument("--own-vmi-by-consumer", action="store_true",
                   help="the node's shard does not republish its copies: follow the VMI through a consumer")
    ns = p.parse_args(argv)
    args = LauncherArgs(vmi=ns.vmi, uid=ns.uid, node=ns.node, node_dir=Path(ns.node_dir),
                        pod_netns=ns.pod_netns, kvm=ns.kvm, node_netns=ns.node_netns, pod_ip=ns.pod_ip,
                        pod_gateway=ns.pod_gateway, secondary=tuple(ns.secondary), ovs_db=ns.ovs_db,
                        host_disk_dirs=tuple(Path(d) for d in ns.host_disk_dir),
                        guest_cpu_group=Path(ns.guest_cpu_group) if ns.guest_cpu_group else None,
                        launch_cpu_group=Path(ns.launch_cpu_group) if ns.launch_cpu_group else None,
                        copies_republished=not ns.own_vmi_by_consumer, migration=ns.migration_target)
    priority.lower_launcher()  # before any thread or child: all of them inherit it
    if args.launch_cpu_group:  # with libvirtd and QEMU's start after it: the node's launches weigh as one
        cpugroup.join(args.launch_cpu_group, os.getpid())
    memory.one_arena()  # before any thread, too
    try:
        args.vmi_dir.mkdir(parents=True, exist_ok=True)
        if launcherlock.hold(args.vmi_dir) is None:
            print(f"launcher: another launcher runs {args.vmi}; leaving it be", file=sys.stderr)
            sys.exit(launcherlock.EXIT_ALREADY_RUNNING)
        launcherlock.write_pid(args.vmi_dir, os.getpid(), args.uid)
        # libvirtd daemonizes; as subreaper this launcher inherits and reaps it (and what it leaves).
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        namespaces.create_netns(args.pod_netns)
        namespaces.enter_private_mounts(args.vmi_dir / "libvirt-etc", args.node_dir / "libvirt-cache")
    except OSError as exc:
        # e.g. a full state dir: say why in the VMI rather than leave the handler a bare exit code
        reason = launch_failure(exc)
        print(f"launcher: {reason}", file=sys.stderr)
        namespaces.delete_netns(args.pod_netns)
        sys.exit(asyncio.run(_report_failure(args, ns.server, ns.creds, reason)))
    sys.exit(asyncio.run(_main(args, ns.server, ns.creds)))


if __name__ == "__main__":
    main()
