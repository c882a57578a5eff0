"""The lab's own DHCP servers for its layer-2 segments (a NAD without ipam: virtbus hands out no
address there, the segment's server does, as on a real provider network). One dnsmasq per segment,
run by the lab's supervisor inside the outside host's namespace, bound to that segment's interface
only; its leases and PID file sit in the lab's state dir, and `lab down` ends it by its PID."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DhcpSegment:
    name: str  # the supervised process is dnsmasq-<name>
    interface: str  # the outside host's interface on the segment
    first: str
    last: str
    netmask: str = "255.255.255.0"


# the provider segment (192.168.200.0/24): floating IPs and tests use addresses below .100
PROVIDER_DHCP = DhcpSegment("provider", "eth0", "192.168.200.100", "192.168.200.150")
# the lab's Open vSwitch segment (ctl.labovs: every node's br1 and the outside host's eth2)
OVS_DHCP = DhcpSegment("ovs", "eth2", "192.168.210.100", "192.168.210.150")
DHCP_SEGMENTS = (PROVIDER_DHCP, OVS_DHCP)


def dnsmasq_command(netns: str, segment: DhcpSegment, state: Path) -> list[str]:
    """dnsmasq in the foreground (the lab's supervisor is its parent and records its PID: dnsmasq
    writes no PID file in the foreground), DHCP only: no DNS (port 0),
    and no router, DNS server, domain or host name in its leases, so a VM's second NIC gets an
    address on the segment and nothing that would take its default route or resolver from its
    pod network."""
    return [
        "ip", "netns", "exec", netns, "dnsmasq", "--keep-in-foreground", "--port=0",
        f"--interface={segment.interface}", "--bind-interfaces", "--except-interface=lo",
        "--no-resolv", "--no-hosts", "--user=root", "--group=root",
        f"--dhcp-range={segment.first},{segment.last},{segment.netmask},1h",
        "--dhcp-option=option:router", "--dhcp-option=option:dns-server",
        "--dhcp-option=option:domain-name", "--dhcp-authoritative",
        f"--dhcp-leasefile={state / f'dnsmasq-{segment.name}.leases'}",
        "--log-dhcp", "--log-facility=-",
    ]


def leases(state: Path, segment: DhcpSegment) -> dict[str, str]:
    """MAC -> address of the segment's current leases (dnsmasq's lease file)."""
    try:
        lines = (state / f"dnsmasq-{segment.name}.leases").read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {fields[1]: fields[2] for fields in (line.split() for line in lines) if len(fields) >= 3}
