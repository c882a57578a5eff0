"""Open vSwitch on a node, through ``ovs-vsctl`` against that node's own database (``--db``: a lab
node runs its own ovsdb-server, never the host's). Used by the handler (which bridges the node has)
and the launcher (a VM's veth end as a port of the NAD's bridge, an access port of its VLAN)."""

from __future__ import annotations

import subprocess

TIMEOUT_S = 10


class OvsError(RuntimeError):
    pass


class Ovs:
    def __init__(self, db: str) -> None:
        self.db = db  # e.g. unix:/var/lib/virtbus/lab/ovs/node1/db.sock

    def _vsctl(self, *args: str) -> str:
        cmd = ["ovs-vsctl", f"--db={self.db}", f"--timeout={TIMEOUT_S}", *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=TIMEOUT_S + 5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OvsError(f"ovs-vsctl: {exc}") from None
        if done.returncode != 0:
            raise OvsError(f"ovs-vsctl {' '.join(args)}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def bridges(self) -> list[str]:
        return sorted(line for line in self._vsctl("list-br").splitlines() if line)

    def add_port(self, bridge: str, port: str, vlan: int | None = None) -> None:
        """The port joins the bridge (again, if it was there), untagged on ``vlan`` if given."""
        self._vsctl("--may-exist", "add-port", bridge, port, *([f"tag={vlan}"] if vlan is not None else []))
        if vlan is not None:  # --may-exist leaves an existing port's settings as they were
            self._vsctl("set", "port", port, f"tag={vlan}")

    def del_port(self, port: str) -> None:
        self._vsctl("--if-exists", "del-port", port)


def bridges_or_none(db: str | None) -> list[str]:
    """The node's OVS bridges; none where it has no OVS (no --ovs-db) or it does not answer."""
    if db is None:
        return []
    try:
        return Ovs(db).bridges()
    except OvsError:
        return []


