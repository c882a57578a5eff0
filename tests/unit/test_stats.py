import msgspec

from handler.metrics import sample_from
from proto import subjects
from proto.stats import from_libvirt


def test_libvirt_record_to_stats() -> None:
    record = {"vcpu.current": 2, "vcpu.0.time": 1_500_000_000, "vcpu.1.time": 500_000_000,
              "balloon.current": 62500, "balloon.rss": 110000, "net.count": 1, "net.0.name": "tap0",
              "net.0.rx.bytes": 100, "net.0.tx.bytes": 200, "net.0.rx.pkts": 3, "net.0.tx.pkts": 4,
              "block.count": 1, "block.0.name": "vda", "block.0.rd.bytes": 4096, "block.0.rd.reqs": 2,
              "block.0.rd.times": 3_000_000_000}
    s = from_libvirt(record, vmi="testvm", uid="u", node="node1", now=10.0)
    assert s.vcpu_seconds == [1.5, 0.5]
    assert (s.memory_domain_bytes, s.memory_resident_bytes) == (62500 * 1024, 110000 * 1024)
    assert (s.nets[0].name, s.nets[0].rx_bytes, s.nets[0].tx_bytes, s.nets[0].tx_packets) == ("tap0", 100, 200, 4)
    assert (s.blocks[0].name, s.blocks[0].read_bytes, s.blocks[0].read_seconds) == ("vda", 4096, 3.0)


def test_missing_keys_are_zero() -> None:
    s = from_libvirt({}, vmi="v", uid="u", node="n", now=0.0)
    assert s.vcpu_seconds == [] and s.nets == [] and s.memory_domain_bytes == 0


def test_a_published_sample_counts_only_for_the_vmi_of_its_subject() -> None:
    data = msgspec.json.encode(from_libvirt({}, vmi="testvm", uid="u", node="node1", now=0.0))
    sample = sample_from("node1", subjects.stats("node1", "testvm"), data)
    assert sample is not None and sample.vmi == "testvm"
    assert sample_from("node1", subjects.stats("node1", "other"), data) is None  # names another VMI
    assert sample_from("node1", subjects.stats("node1", "testvm"), b"{not json") is None
    hostile = msgspec.json.encode(from_libvirt({}, vmi='x",evil="1', uid="u", node="node1", now=0.0))
    assert sample_from("node1", "virtbus.stats.node1.x", hostile) is None
