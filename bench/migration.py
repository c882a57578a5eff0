"""Live migration as a client of the guest sees it: one guest (the seed testvm's shape, TCG) moved
back and forth between the lab's two nodes ``--rounds`` times through the API, while an HTTP client on
the lab's outside host asks for the guest's page through a NodePort Service every ``--probe-every``
seconds. Prints each move's time (asked -> Succeeded, P50 and max) and the longest the guest went
unanswered around each move (its downtime as that client saw it: the guest's pause at the end of the
pre-copy, its pod IP changing with its node, the node port's rules following it). What it made is
deleted at the end, also when it fails.

Against a running lab (scripts/lab.sh), or one of its own for the run (--own-lab):
    .venv/bin/python bench/migration.py [--rounds 10] [--probe-every 0.05] [--state-dir DIR] [--own-lab]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import entry  # noqa: E402 - bench/entry.py, beside this script
from lane import own_lab, percentile  # noqa: E402 - bench/lane.py, beside this script

from ctl.client import ApiClient  # noqa: E402
from ctl.lab import DEFAULT_STATE_DIR, LabConfig  # noqa: E402
from proto.api import Ack, NameRequest, ServiceReply, VMIReply, VMReply  # noqa: E402
from proto.errors import ApiError, Code  # noqa: E402
from proto.migrations import FINAL, MigrationCreate, MigrationReply  # noqa: E402
from proto.state import MigrationPhase, Phase  # noqa: E402
from servicekit import netns_socket  # noqa: E402

NAME = "migbench"
PORT = 8000


def manifest() -> bytes:
    labels = {"kubevirt.io/domain": NAME}
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": NAME},
                       "spec": {"running": True, "template": {"metadata": {"labels": labels}, "spec": {
                           "domain": {"resources": {"requests": {"memory": "64M"}},
                                      "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}],
                                                  "interfaces": [{"name": "default", "masquerade": {}}]}},
                           "networks": [{"name": "default", "pod": {}}],
                           "volumes": [{"name": "root", "containerDisk": {
                               "image": "quay.io/kubevirt/cirros-container-disk-demo"}}]}}}}).encode()


def service() -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{NAME}-http"},
                       "spec": {"type": "NodePort", "selector": {"kubevirt.io/domain": NAME},
                                "ports": [{"port": PORT, "targetPort": 80}]}}).encode()


class Prober:
    """GETs of the guest's page from the lab's outside host, through a node port, in a thread of its
    own; the times of the answers that came back whole."""

    def __init__(self, netns: str, address: str, port: int, every: float) -> None:
        self.netns, self.address, self.port, self.every = netns, address, port, every
        self.answered: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            if self._get():
                self.answered.append(time.monotonic())
            self.stop.wait(self.every)

    def _get(self) -> bool:
        try:
            sock = netns_socket.socket_in(self.netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except OSError:
            return False
        with sock:
            # short: a request that went to the pod the guest left is never answered, and waiting a
            # second for it would be measured as the guest's
            sock.settimeout(max(0.2, 4 * self.every))
            try:
                sock.connect((self.address, self.port))
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            except OSError:
                return False
        return f"hostname: {NAME}".encode() in data

    def longest_gap(self, since: float, until: float) -> float:
        """The longest time without an answer between ``since`` and ``until`` (monotonic)."""
        marks = [since, *(t for t in self.answered if since < t < until), until]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


async def wait_for(what: str, check: object, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not await check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise ApiError(Code.UNAVAILABLE, f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace, url: str, creds: str | None, lab: LabConfig) -> int:
    api = await ApiClient.connect(url, creds)
    prober: Prober | None = None
    try:
        await api.call("vm", "apply", manifest(), VMReply)

        async def running() -> bool:
            vmi = (await api.call("vmi", "get", NameRequest(name=NAME), VMIReply)).item
            return vmi.phase is Phase.RUNNING
        await wait_for(f"{NAME} Running", running, args.timeout)
        node_port = (await api.call("service", "apply", service(), ServiceReply)).item.service.ports[0].node_port
        assert node_port is not None
        address = lab.addresses[lab.nodes[0]].split("/")[0]
        prober = Prober(lab.outside_netns, address, node_port, args.probe_every)
        prober.thread.start()
        await wait_for("the guest's page through the node port", lambda: asyncio.sleep(0, bool(prober.answered)),
                       args.timeout)
        took, gaps, failed = [], [], []
        for _ in range(args.rounds):
            asked = time.monotonic()
            item = (await api.call("migration", "create", MigrationCreate(vmi_name=NAME), MigrationReply)).item
            phase = item.phase
            while phase not in FINAL:
                await asyncio.sleep(0.05)
                phase = (await api.call("migration", "get", NameRequest(name=item.name), MigrationReply)).item.phase
            done = time.monotonic()
            if phase is not MigrationPhase.SUCCEEDED:
                failed.append(item.name)
                continue
            took.append(done - asked)
            await asyncio.sleep(2.0)  # the client's answers after the move, before the next
            gaps.append(prober.longest_gap(asked, time.monotonic()))
        print(f"migration: {args.rounds} moves of a 64M TCG guest between {lab.nodes[0]} and {lab.nodes[1]}: "
              f"{len(took)} Succeeded, {len(failed)} failed", flush=True)
        if took:
            print(f"  asked->Succeeded: P50 {percentile(took, 50):.2f}s, max {max(took):.2f}s")
            print(f"  longest without an answer (HTTP every {args.probe_every:.2f}s through a node port): "
                  f"P50 {percentile(gaps, 50):.2f}s, max {max(gaps):.2f}s")
        return 0 if not failed else 1
    finally:
        if prober is not None:
            prober.stop.set()
        for kind, name in (("service", f"{NAME}-http"), ("vm", NAME)):
            with contextlib.suppress(ApiError):
                await api.call(kind, "delete", NameRequest(name=name), Ack)

        async def gone() -> bool:
            try:
                await api.call("vmi", "get", NameRequest(name=NAME), VMIReply)
            except ApiError as exc:
                return exc.code is Code.NOT_FOUND
            return False
        with contextlib.suppress(ApiError):
            await wait_for(f"{NAME} deleted", gone, args.timeout)
        await api.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--probe-every", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="the lab's (its addresses, its outside host)")
    p.add_argument("--own-lab", action="store_true", help="bring up a 2-node lab for the run, and down after")
    args = p.parse_args()
    if args.rounds < 1 or args.probe_every <= 0:
        p.error("--rounds must be at least 1 and --probe-every positive")
    if args.own_lab:
        with own_lab(2) as (url, creds, state):
            lab = LabConfig.load(str(state))
            assert lab is not None
            sys.exit(asyncio.run(run(args, url, creds, lab)))
    lab = LabConfig.load(args.state_dir)
    if lab is None or len(lab.nodes) < 2:
        p.error(f"no lab of two nodes in {args.state_dir} (scripts/lab.sh, or --own-lab)")
    sys.exit(asyncio.run(run(args, lab.url, lab.creds("admin"), lab)))


if __name__ == "__main__":
    entry.run(main, "migration.py")
