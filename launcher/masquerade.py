"""The masquerade binding's nftables ruleset, as KubeVirt writes it in the pod (pure).

The guest sits behind ``k6t-eth0`` (10.0.2.1/24) as 10.0.2.2; the pod's ``eth0`` holds the pod IP.
Inbound traffic to the pod IP is DNATed to the guest (only the listed ports, when there are any),
the guest's outbound traffic is masqueraded, a process in the pod reaching 127.0.0.1 reaches the
guest, and the guest reaching its own pod IP comes back to itself (hairpin).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from proto.spec import Port
from servicekit.nftables import nat_table

TABLE = "virtbus_nat"


@dataclass(frozen=True)
class Masquerade:
    pod_ip: IPv4Address
    guest_ip: IPv4Address = IPv4Address("10.0.2.2")
    gateway: IPv4Address = IPv4Address("10.0.2.1")
    pod_if: str = "eth0"
    bridge: str = "k6t-eth0"
    ports: tuple[Port, ...] = ()


def _matches(ports: tuple[Port, ...]) -> list[str]:
    """One match per protocol for the listed ports; all traffic when there are none."""
    if not ports:
        return ["meta l4proto { tcp, udp }"]
    out = []
    for proto in ("TCP", "UDP"):
        numbers = sorted({p.port for p in ports if p.protocol == proto})
        if numbers:
            out.append(f"{proto.lower()} dport {{ {', '.join(map(str, numbers))} }}")
    return out


def compose_ruleset(m: Masquerade) -> str:
    """An ``nft -f`` script that replaces the table as a whole (atomically)."""
    dnat = _matches(m.ports)
    return nat_table(TABLE, {
        "prerouting": [
            *(f'iifname "{m.pod_if}" ip daddr {m.pod_ip} {match} dnat to {m.guest_ip}' for match in dnat),
            *(f'iifname "{m.bridge}" ip saddr {m.guest_ip} ip daddr {m.pod_ip} {match} dnat to {m.guest_ip}'
              for match in dnat),
        ],
        "output": [f"ip daddr 127.0.0.1 {match} dnat to {m.guest_ip}" for match in dnat],
        "postrouting": [
            f'ip saddr {m.guest_ip} ip daddr {m.guest_ip} oifname "{m.bridge}" snat to {m.gateway}',
            f'ip saddr 127.0.0.1 oifname "{m.bridge}" snat to {m.gateway}',
            f'ip saddr {m.guest_ip} oifname "{m.pod_if}" masquerade',
        ],
    })
