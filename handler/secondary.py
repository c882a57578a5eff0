"""Secondary networks (the multus case) on this node: the NAD's host bridge. Each VM's address on
it is given by the control plane (scheduler/nodeapi.py), unique in the cluster and kept by the VM."""

from __future__ import annotations

import subprocess


class SecondaryNetworks:
    def __init__(self, netns: str | None) -> None:
        self.netns = netns

    def ensure_bridge(self, bridge: str) -> None:
        """Like the bridge CNI plugin: the host bridge is made if it is not there."""
        ip = ["ip", *(["-n", self.netns] if self.netns else [])]
        subprocess.run([*ip, "link", "add", bridge, "type", "bridge"], capture_output=True, check=False)
        subprocess.run([*ip, "link", "set", bridge, "up"], capture_output=True, check=True)
