"""Per-VMI libvirt statistics, published by launchers on the bus (nothing scrapes a launcher)."""

from __future__ import annotations

import msgspec


class Stat(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    pass


class NetStats(Stat, frozen=True):
    name: str
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0


class BlockStats(Stat, frozen=True):
    name: str
    read_bytes: int = 0
    write_bytes: int = 0
    read_requests: int = 0
    write_requests: int = 0
    read_seconds: float = 0.0
    write_seconds: float = 0.0


class VMIStats(Stat, frozen=True):
    vmi: str
    uid: str
    node: str
    timestamp: float
    vcpu_seconds: list[float] = []  # per vCPU
    memory_domain_bytes: int = 0
    memory_resident_bytes: int = 0
    memory_available_bytes: int = 0
    nets: list[NetStats] = []
    blocks: list[BlockStats] = []


def from_libvirt(record: dict[str, object], *, vmi: str, uid: str, node: str, now: float) -> VMIStats:
    """Pure: libvirt's flat getAllDomainStats record into a VMIStats."""
    def num(key: str) -> int:
        value = record.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    vcpus = [num(f"vcpu.{i}.time") / 1e9 for i in range(num("vcpu.current"))]
    nets = [NetStats(name=str(record.get(f"net.{i}.name", f"net{i}")), rx_bytes=num(f"net.{i}.rx.bytes"),
                     tx_bytes=num(f"net.{i}.tx.bytes"), rx_packets=num(f"net.{i}.rx.pkts"),
                     tx_packets=num(f"net.{i}.tx.pkts"), rx_errors=num(f"net.{i}.rx.errs"),
                     tx_errors=num(f"net.{i}.tx.errs"), rx_dropped=num(f"net.{i}.rx.drop"),
                     tx_dropped=num(f"net.{i}.tx.drop")) for i in range(num("net.count"))]
    blocks = [BlockStats(name=str(record.get(f"block.{i}.name", f"block{i}")), read_bytes=num(f"block.{i}.rd.bytes"),
                         write_bytes=num(f"block.{i}.wr.bytes"), read_requests=num(f"block.{i}.rd.reqs"),
                         write_requests=num(f"block.{i}.wr.reqs"), read_seconds=num(f"block.{i}.rd.times") / 1e9,
                         write_seconds=num(f"block.{i}.wr.times") / 1e9) for i in range(num("block.count"))]
    return VMIStats(vmi=vmi, uid=uid, node=node, timestamp=now, vcpu_seconds=vcpus,
                    memory_domain_bytes=num("balloon.current") * 1024,
                    memory_resident_bytes=num("balloon.rss") * 1024,
                    memory_available_bytes=num("balloon.available") * 1024 or num("balloon.current") * 1024,
                    nets=nets, blocks=blocks)
